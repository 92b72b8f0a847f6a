"""Every knob of `recall serve` and `recall worker`, read from the environment through one settings object.

Variables are `RECALL_<FIELD>` (e.g. `RECALL_INDEX_ROOT`), except `REDIS_URL`, the name every platform uses.
Without `REDIS_URL` the service runs embedded: a private redis-server under `RECALL_DATA_DIR` and the near-line
worker inside the API process.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECALL_", extra="ignore", populate_by_name=True)

    # Where things are.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "RECALL_REDIS_URL"),
                                  description="redis://, rediss:// (TLS) or unix:// URL; unset = embedded server")
    redis_password: SecretStr | None = Field(default=None, description="Redis's password as it is (a password "
                                             "inside REDIS_URL must be URL-encoded); overrides the URL's")
    redis_cluster: bool = Field(default=False, description="REDIS_URL names a node of a Redis Cluster")
    redis_of_serve: bool = Field(default=False, description="set by `recall serve` for its API processes: "
                                 "REDIS_URL is the private server it runs on its embedded default")
    redis_connect_timeout_s: float = Field(default=30.0, gt=0, description="how long start-up waits for Redis")
    data_dir: Path = Field(default=Path("var"), description="embedded Redis data and socket")
    index_root: Path = Field(default=Path("var/index"), description="what `recall build-index --out` publishes: each "
                                 "version holds the index and the model files it serves with")
    archive_dir: Path | None = Field(default=None, description="when set, every accepted event is also written to "
                                     "data-contract Parquet files under it, by hour (recall train --events DIR)")
    archive_flush_s: float = Field(default=30.0, gt=0, description="events reach the archive within this long")
    # Security and limits.
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key of /v1/events")
    api_key: SecretStr | None = Field(default=None, description="when set, /v1/recall needs `X-API-Key`")
    replay_window_s: int = Field(default=300, gt=0, description="accepted webhook timestamp skew")
    max_body_bytes: int = Field(default=1_048_576, gt=0, description="request body limit of every route")
    max_batch_events: int = Field(default=1000, gt=0, description="events per webhook call")
    max_batch_requests: int = Field(default=256, gt=0, description="requests per /v1/recall/batch call")
    max_stream_lag: int = Field(default=200_000, gt=0, description="webhook answers 429 beyond this backlog")
    # Streams and the near-line worker.
    key_prefix: str = Field(default="nr", pattern=r"^[A-Za-z0-9_.:-]+$")
    stream_partitions: int = Field(default=8, gt=0, le=1024, description="fixed for the life of the data")
    # Each remembered id is a Redis key of about 100 bytes: 1,000 events/s for an hour is ~3.6M keys, ~350 MB.
    dedupe_ttl_s: int = Field(default=3600, gt=0, description="how long an event_id is remembered")
    worker_read_count: int = Field(default=512, gt=0, description="messages read per partition per batch")
    worker_block_ms: int = Field(default=20, ge=0)
    worker_lease_ms: int = Field(default=10_000, gt=0, description="a dead worker's partitions move after this")
    embedded_worker: bool = Field(default=True, description="run the worker inside `recall serve` when embedded")
    # A prefix state is 4·L·d bytes per history token (about 100 KB at 200 tokens, d=64, 2 blocks): the TTL keeps
    # it for recently active users only (README, "Settings", sizes it).
    prefix_ttl_s: int = Field(default=3600, ge=0, description="how long the worker keeps a user's prefix state, "
                              "which answers requests in a new context in one token; 0 = none kept (such "
                              "requests encode the whole history)")
    # Compute.
    workers: int = Field(default=0, ge=0, description="API processes of `recall serve` (its --workers); 0 = one "
                         "per CPU the container gives. Each holds the model pair in memory")
    encoder_threads: int = Field(default=0, ge=0, description="onnxruntime threads; 0 = the container's CPUs")
    search_threads: int = Field(default=1, gt=0, description="FAISS OpenMP threads per search")
    use_gpu: bool | None = Field(default=None, description="unset = use a GPU when one is visible")
    index_poll_s: float = Field(default=1.0, gt=0, description="how often CURRENT is checked for a new index")

    @property
    def embedded(self) -> bool:
        """No REDIS_URL: this process starts the private redis-server itself."""
        return not self.redis_url

    def api_processes(self, requested: int | None = None) -> int:
        """How many API processes `recall serve` runs: `requested` (its --workers), else `workers`, else one per
        CPU."""
        return requested if requested is not None else self.workers or container_cpus()

    @property
    def redis_password_value(self) -> str | None:
        return None if self.redis_password is None else self.redis_password.get_secret_value()


@lru_cache
def get_settings() -> Settings:
    return Settings()


def container_cpus() -> int:
    """CPUs this process may really use: the cgroup v2 quota when set, else the affinity mask."""
    available = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            available = min(available, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, available)
