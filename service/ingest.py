"""The webhook's signatures, and events normalised for the streams (the event model is in service/models.py).

A sender signs `"<timestamp>." + raw body` with HMAC-SHA256 and the shared secret and sends
`X-Recall-Timestamp: <unix seconds>` and `X-Recall-Signature: sha256=<hex>`. A timestamp outside the replay
window is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

from contract.columns import ACTION_CODES
from service.models import Event

TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-Recall-Timestamp", "X-Recall-Signature"


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Recall-Signature` value of `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers of a webhook call carrying `body`: what every sender (demo, benchmarks, tests) attaches."""
    sent_at = str(int(time.time()) if timestamp is None else timestamp)
    return {"content-type": "application/json", TIMESTAMP_HEADER: sent_at,
            SIGNATURE_HEADER: sign(secret, sent_at, body)}


def signature_problem(secret: str, timestamp: str | None, signature: str | None, body: bytes,
                      window_s: int, now: float | None = None) -> str | None:
    """Why a webhook call is not authentic, or None when it is."""
    if not timestamp or not signature:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs((now if now is not None else time.time()) - sent_at) > window_s:
        return f"{TIMESTAMP_HEADER} is outside the {window_s} s replay window"
    # Headers arrive as latin-1 text; compare bytes, so any header value gives 401, never an error.
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode("latin-1")):
        return "signature does not match the body"
    return None


def normalise(event: Event, received_at: float) -> dict:
    """The stream form of an event: text ids, integer seconds, the action code and an idempotency key."""
    normalised = {
        "user_id": str(event.user_id), "item_id": str(event.item_id),
        "timestamp": None if event.timestamp is None else int(event.timestamp),
        "action": ACTION_CODES[event.action], "context": event.context, "scenario": event.scenario,
        "session_id": None if event.session_id is None else str(event.session_id),
    }
    # Hashed before the receive time is filled in, so a redelivered copy hashes the same.
    normalised["event_id"] = str(event.event_id) if event.event_id is not None else \
        hashlib.sha256(orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    if normalised["timestamp"] is None:
        normalised["timestamp"] = int(received_at)
    return normalised
