"""Every typed request and response model of the HTTP API: the webhook's events, new items, /v1/recall's bodies."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

MAX_ID_LENGTH = 256
MAX_FUTURE_S = 86_400  # clocks drift, but an event from tomorrow is a bug upstream

Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)] | StrictInt
OptionalText = Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH)] | None


class RecentEvent(BaseModel):
    """An event of the requesting user, sent with a recall request: the webhook's event shape without `user_id`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"item_id": 1234, "timestamp": 1764766800, "action": "click", "context": "search:running shoes"}]})

    item_id: Id
    timestamp: StrictInt | StrictFloat | None = Field(default=None, ge=0,
                                                     description="unix seconds; absent = when received")
    action: Literal["show", "click", "cart", "pay"] = "click"
    context: OptionalText = None
    scenario: OptionalText = None
    session_id: Id | None = None
    event_id: Id | None = Field(default=None, description="idempotency key; absent = a hash of the event")

    @field_validator("timestamp")
    @classmethod
    def not_in_the_future(cls, value: float | None) -> float | None:
        if value is not None and value > time.time() + MAX_FUTURE_S:
            raise ValueError("timestamp is more than a day in the future")
        return value


class Event(RecentEvent):
    """One event in the data-contract shape (DESIGN.md section 3)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": 42, "item_id": 1234, "timestamp": 1764766800, "action": "click",
         "context": "search:running shoes", "scenario": "search", "event_id": "evt-0001"}]})

    user_id: Id


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"events": [{"user_id": 42, "item_id": 1234, "action": "click", "context": "search:running shoes",
                     "event_id": "evt-0001"}]}]})

    events: list[Event] = Field(min_length=1)


MAX_TEXT_LENGTH = 10_000
MAX_BATCH_ITEMS = 1000


class NewItem(BaseModel):
    """An item in the items-file shape (README, "The data contract"), sent to POST /v1/items."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"item_id": 98765, "category": "shoes", "seller": "acme", "title": "Trail running shoe",
         "description": "Waterproof, grippy sole", "attributes": "brand:acme|color:red|size:42"}]})

    item_id: Id
    category: OptionalText = None
    seller: OptionalText = None
    title: Annotated[StrictStr, Field(max_length=MAX_TEXT_LENGTH)] | None = None
    description: Annotated[StrictStr, Field(max_length=MAX_TEXT_LENGTH)] | None = None
    attributes: Annotated[StrictStr, Field(max_length=MAX_TEXT_LENGTH,
                                           description="key:value tokens joined by '|'")] | None = None


class ItemBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[NewItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)

    @field_validator("items")
    @classmethod
    def distinct_ids(cls, items: list[NewItem]) -> list[NewItem]:
        ids = [str(item.item_id) for item in items]
        if len(set(ids)) < len(ids):
            repeated = next(item_id for item_id in ids if ids.count(item_id) > 1)
            raise ValueError(f"item_id {repeated!r} appears more than once in the batch")
        return items


class ItemsResult(BaseModel):
    added: int = Field(description="items new to the live catalogue, retrievable from now on")
    known: int = Field(description="items the catalogue already had (the model's own, or added before): unchanged")


class IngestResult(BaseModel):
    accepted: int = Field(description="events appended to the streams")
    duplicates: int = Field(description="events whose event_id was already seen (not appended again)")


MAX_K = 1000
MAX_LIST = 1000
MAX_ALLOWED = 100_000
MAX_RECENT_EVENTS = 200

VectorSource = Literal["precomputed", "query_step", "online", "cold"]
Fallback = Literal["cold_user", "reencoded_stale_vector", "redis_unavailable"]


class RecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": 42, "context": "search:running shoes", "k": 100},
        {"user_id": "new-visitor-7", "k": 50, "allowed_item_ids": [1234, 1235, 1240],
         "recent_events": [{"item_id": 1234, "action": "click"}]}]})

    user_id: Id
    context: Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH)] | None = Field(
        default=None, description="the request's context; absent = the user's last one; unknown = the default")
    scenario: Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH)] | None = Field(
        default=None, description="absent = the user's last scenario")
    k: StrictInt = Field(default=100, ge=1, le=MAX_K)
    filter_viewed: StrictBool = True
    exclude_item_ids: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
    categories: list[Id] | None = Field(default=None, max_length=MAX_LIST, description="only items of these")
    allowed_item_ids: list[Id] | None = Field(default=None, max_length=MAX_ALLOWED, description=(
        "only these items (an allow-list, applied inside the search, so k of them come back when k exist)"))
    recent_events: list[RecentEvent] = Field(default_factory=list, max_length=MAX_RECENT_EVENTS, description=(
        "the user's latest events, appended to the stored history for this request only (never stored): a user "
        "the webhook has not told about yet is personalised. Events not after the stored history's newest one "
        "are taken as already stored and skipped"))


class RecallBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"requests": [{"user_id": 42, "k": 100}, {"user_id": 43, "context": "home", "k": 100}]}]})

    requests: list[RecallRequest] = Field(min_length=1, description="at most RECALL_MAX_BATCH_REQUESTS (256)")


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: int | str
    score: float


class RecallResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Candidate]
    model_version: str
    index_version: str
    user_vector_age_ms: int | None = Field(description="how old the user's stored state is; None for cold users")
    vector_source: VectorSource = Field(description="precomputed near-line; query_step: the request's context "
                                        "token over the user's stored prefix state; online: the stored history "
                                        "encoded in full (another context, no prefix state); cold: context only")
    fallback: Fallback | None = Field(description="set when the answer is not personalised from a fresh vector "
                                      "of the serving model")
    context_used: str | None = Field(description="the context the model read: the request's, or the user's last "
                                     "when the request names none; null = the default (none, or one the model "
                                     "does not know)")


class RecallBatchResponse(BaseModel):
    results: list[RecallResponse] = Field(description="one answer per request, in the requests' order")


class Readiness(BaseModel):
    ready: bool
    redis: bool
    model_version: str | None
    index_version: str | None
    embedded: bool
    stream_backlog: int | None = Field(description="events appended but not yet applied by the workers")
    archive_backlog: int | None = Field(default=None, description="events appended but not yet written to the "
                                        "archive (RECALL_ARCHIVE_DIR); null without an archive")
    refused_index: str | None = Field(default=None, description="the published index version that was refused "
                                      "(while the live pair keeps serving), and why")
    encoder_provider: str | None = Field(default=None, description="the onnxruntime execution provider that runs "
                                         "the user encoder, e.g. CPUExecutionProvider or CUDAExecutionProvider")
    faiss_device: Literal["cpu", "gpu"] | None = Field(default=None, description="where the live index searches")
    query_step: bool | None = Field(default=None, description="whether requests in a context not precomputed are "
                                    "answered from stored prefix states (the live model has a query step and "
                                    "RECALL_PREFIX_TTL_S > 0); otherwise they encode the whole history")
    problems: list[str]
