"""The demo's online half, against a running service: seed user histories through the signed webhook, then
replay held-out sessions one by one, asking /v1/recall before each session and checking what the user then did.

Everything goes through the public API, so it works the same against the embedded service and docker-compose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pandas as pd
from rich.progress import Progress

from contract.columns import Columns
from service.ingest import signed_headers

BATCH = 1000
ACTED = ("click", "cart", "pay")
CONTRACT_COLUMNS = (Columns.user, Columns.item, Columns.timestamp, Columns.action, Columns.context,
                    Columns.scenario, Columns.session, Columns.event_id)


@dataclass
class ReplayedSession:
    user_id: object
    context: str | None
    other_context: str | None
    served: list
    served_other: list
    popular: list
    targets: set
    freshness_ms: float | None


@dataclass
class ReplayResult:
    k: int
    sessions: list[ReplayedSession] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    events_replayed: int = 0
    events_accepted: int = 0
    events_applied: int | None = None


class ServiceClient:
    def __init__(self, url: str, secret: str, api_key: str | None = None):
        self.http = httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": api_key} if api_key else {})
        self.secret = secret

    def post_events(self, events: list[dict]) -> int:
        """Post one signed batch; waits out back-pressure (429 with Retry-After) like a well-behaved sender."""
        body = orjson.dumps({"events": events})
        while True:
            response = self.http.post("/v1/events", content=body, headers=signed_headers(self.secret, body))
            if response.status_code != 429:
                break
            time.sleep(float(response.headers.get("retry-after", "1")))
        response.raise_for_status()
        return response.json()["accepted"]

    def recall(self, **request) -> tuple[dict, float]:
        started = time.perf_counter()
        response = self.http.post("/v1/recall", json=request)
        response.raise_for_status()
        return response.json(), (time.perf_counter() - started) * 1000

    def wait_until_applied(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while self.http.get("/readyz").json().get("stream_backlog") != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not catch up with the replayed events")
            time.sleep(0.2)

    def events_applied(self) -> int | None:
        """From the API's metrics: present when the worker runs in the API process (the embedded default)."""
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith("worker_events_applied_total "):
                return int(float(line.split()[1]))
        return None


def as_events(frame: pd.DataFrame) -> list[dict]:
    """Data-contract rows as webhook events (JSON types, missing values left out)."""
    columns = [c for c in CONTRACT_COLUMNS if c in frame]
    records = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    events = []
    for record in records:
        event = {}
        for name, value in record.items():
            if value is None:
                continue
            if isinstance(value, np.generic):
                value = value.item()
            event[name] = str(value) if name in (Columns.context, Columns.scenario, Columns.action) else value
        events.append(event)
    return events


def seed(client: ServiceClient, history: pd.DataFrame, result: ReplayResult) -> None:
    events = as_events(history)
    with Progress(transient=True) as progress:
        task = progress.add_task("replaying history through the webhook", total=len(events))
        for start in range(0, len(events), BATCH):
            batch = events[start:start + BATCH]
            result.events_accepted += client.post_events(batch)
            result.events_replayed += len(batch)
            progress.advance(task, len(batch))
    client.wait_until_applied()


def next_sessions(holdout: pd.DataFrame, n_users: int) -> list[pd.DataFrame]:
    """The first held-out session of up to `n_users` users, in time order."""
    key = Columns.session if Columns.session in holdout else Columns.timestamp
    sessions = []
    for _, events in holdout.groupby(Columns.user, sort=False):
        first = events[events[key] == events[key].iloc[0]]
        sessions.append(first)
        if len(sessions) == n_users:
            break
    return sessions


def replay_sessions(client: ServiceClient, history: pd.DataFrame, holdout: pd.DataFrame, k: int, n_users: int,
                    result: ReplayResult) -> None:
    acted_history = history[history[Columns.action].isin(ACTED)] if Columns.action in history else history
    popular_items = acted_history[Columns.item].value_counts().index.tolist()
    # What filter_viewed leaves out, in the service as offline: items acted on; an item only shown stays a candidate.
    viewed = acted_history.groupby(Columns.user)[Columns.item].agg(set).to_dict()
    contexts = history[Columns.context].astype(str).value_counts().index.tolist() if Columns.context in history \
        else []
    with Progress(transient=True) as progress:
        sessions = next_sessions(holdout, n_users)
        task = progress.add_task("replaying held-out sessions", total=len(sessions))
        for session in sessions:
            user = session[Columns.user].iloc[0]
            user = user.item() if isinstance(user, np.generic) else user
            context = str(session[Columns.context].iloc[0]) if Columns.context in session else None
            other = next((c for c in contexts if c != context), None)
            served, latency = client.recall(user_id=user, context=context, k=k)
            result.latencies_ms.append(latency)
            served_other = client.recall(user_id=user, context=other, k=k)[0] if other else {"items": []}
            acted = session[session[Columns.action].isin(ACTED)] if Columns.action in session else session
            seen = viewed.get(user, set())
            popular = [item for item in popular_items if item not in seen][:k]
            events = as_events(session)
            sent_ms = time.time() * 1000
            result.events_accepted += client.post_events(events)
            result.events_replayed += len(events)
            result.sessions.append(ReplayedSession(
                user_id=user, context=context, other_context=other,
                served=[i["item_id"] for i in served["items"]], served_other=[i["item_id"] for i in
                                                                              served_other["items"]],
                popular=popular, targets=set(acted[Columns.item].tolist()) - seen,
                freshness_ms=wait_for_fresh_vector(client, user, sent_ms)))
            progress.advance(task)
    client.wait_until_applied()
    result.events_applied = client.events_applied()


def wait_for_fresh_vector(client: ServiceClient, user, sent_ms: float, timeout_s: float = 30) -> float | None:
    """Milliseconds from posting the session to the user's vector being rewritten, read from the API's
    `user_vector_age_ms` (the vector was written at request time minus its age)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        asked_ms = time.time() * 1000
        answer, _ = client.recall(user_id=user, k=1)
        if answer["user_vector_age_ms"] is not None and asked_ms - answer["user_vector_age_ms"] >= sent_ms:
            return max(asked_ms - answer["user_vector_age_ms"] - sent_ms, 0.0)
        time.sleep(0.005)
    return None


def recall_at_k(sessions: list[ReplayedSession], attribute: str) -> float:
    scored = [s for s in sessions if s.targets]
    return float(np.mean([len(set(getattr(s, attribute)) & s.targets) / len(s.targets) for s in scored])) \
        if scored else 0.0
