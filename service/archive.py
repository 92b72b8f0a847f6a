"""The event archive: every accepted event written once to data-contract Parquet files, partitioned by hour.

    RECALL_ARCHIVE_DIR/date=2026-12-03/hour=14/part-00000042.parquet

The archiver reads the event streams through its own consumer group, so the near-line worker's progress and its
own never wait on each other (the worker keeps the streams from being trimmed below what the archive still needs).
Every `flush_s` it writes what it read, one file per flush and hour of acceptance, each through a hidden temporary
file renamed into place (a reader never sees half a file; the data contract's directory reader skips hidden files).

Exactly once, across crashes, by a write-ahead plan in Redis:
1. the plan (flush number, and per stream partition the last entry it covers) is stored before any file is written;
2. the files are written, named by the flush number;
3. one transaction moves each partition's watermark to the plan's last entry and deletes the plan;
4. the entries are acknowledged.
A crash before 3 leaves the entries pending in the group and the plan in Redis: the restarted archiver reads its
pending entries again and redoes the same plan, which rewrites the same files with the same rows. A crash after 3
leaves entries at or below the watermark, which are acknowledged without being written again.

The file system is touched in `_write_part` and `_clean_temporary` only: an fsspec file system (an S3 bucket,
where a finished multipart upload is atomic) can replace the local directory there.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from contract.columns import ACTIONS
from service.store.keys import REDIS_ERRORS, Keys, RedisClient
from service.store.streams import ensure_groups, stream_id

logger = logging.getLogger(__name__)
CONSUMER = "archiver"  # one archiver per deployment: a fixed name, so a restarted one finds its pending entries
COLUMNS = ["event_id", "user_id", "session_id", "timestamp", "item_id", "action", "context", "scenario"]


class EventArchiver:
    def __init__(self, client: RedisClient, keys: Keys, directory: Path, flush_s: float = 30.0,
                 read_count: int = 1000):
        self.client, self.keys, self.directory = client, keys, Path(directory)
        self.flush_s, self.read_count = flush_s, read_count
        self.buffer: list[tuple[int, bytes, dict]] = []  # (partition, entry id, event), read and not yet flushed
        # Where each partition's pending list (what this consumer was given before a restart) is read from next;
        # a partition leaves it once its pending list is read through, then reads new entries.
        self.pending_cursor: dict[int, str] = {}
        self.restart_reading()
        ensure_groups(client, keys, keys.archive_group)
        _clean_temporary(self.directory)

    def run(self, stop: threading.Event) -> None:
        logger.info("archiving events to %s every %.0f s", self.directory, self.flush_s)
        while not stop.is_set():
            try:
                self.step()
            except REDIS_ERRORS as error:
                logger.warning("archive: redis error (%s); retrying", error)
                self.restart_reading()  # unacknowledged: read again from the pending list
                stop.wait(1.0)
            except OSError:
                logger.exception("archive: writing failed; retrying")
                self.restart_reading()
                stop.wait(1.0)
        # What was read and not flushed stays pending in the group: the next archiver writes it.

    def restart_reading(self) -> None:
        self.buffer = []
        self.pending_cursor = {partition: "0" for partition in range(self.keys.partitions)}

    def step(self) -> None:
        """Read what arrived; flush when the oldest unflushed event would otherwise miss `flush_s`."""
        self.buffer += self.read()
        plan = self.client.get(self.keys.archive_plan)
        if plan is not None:  # a flush that a crash interrupted: redo it once all its entries are read again
            if not self.pending_cursor:
                self.flush(json.loads(plan))
            return
        if self.buffer and time.time() * 1000 - stream_id(self.buffer[0][1])[0] >= self.flush_s * 1000 * 0.8:
            self.flush(None)
        elif not self.buffer:
            time.sleep(min(0.2, self.flush_s / 10))

    def read(self) -> list[tuple[int, bytes, dict]]:
        pipe = self.client.pipeline(transaction=False)
        for partition in range(self.keys.partitions):
            pipe.xreadgroup(self.keys.archive_group, CONSUMER,
                            {self.keys.stream(partition): self.pending_cursor.get(partition, ">")},
                            count=self.read_count)
        messages = []
        for partition, reply in enumerate(pipe.execute()):
            entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
            if partition in self.pending_cursor:
                if entries:
                    self.pending_cursor[partition] = entries[-1][0].decode()
                else:
                    del self.pending_cursor[partition]
            messages += [(partition, entry_id, orjson.loads(fields[b"e"])) for entry_id, fields in entries if fields]
        return sorted(messages, key=lambda message: stream_id(message[1]))

    def flush(self, plan: dict | None) -> None:
        watermarks = {int(p): stream_id(v) for p, v in self.client.hgetall(self.keys.archive_watermarks).items()}
        if plan is None:
            last_of = {}
            for partition, entry_id, _ in self.buffer:
                last_of[partition] = entry_id.decode()
            plan = {"flush": int(self.client.incr(self.keys.archive_flushes)), "last": last_of}
            self.client.set(self.keys.archive_plan, json.dumps(plan))
        upto = {int(p): stream_id(v) for p, v in plan["last"].items()}
        covered = [m for m in self.buffer if m[0] in upto and stream_id(m[1]) <= upto[m[0]]]
        new = [m for m in covered if stream_id(m[1]) > watermarks.get(m[0], (-1, -1))]
        by_hour: dict[str, list[dict]] = defaultdict(list)
        for _, entry_id, event in new:
            accepted = datetime.fromtimestamp(stream_id(entry_id)[0] / 1000, UTC)
            by_hour[accepted.strftime("date=%Y-%m-%d/hour=%H")].append(event)
        for hour, events in sorted(by_hour.items()):
            _write_part(self.directory / hour / f"part-{plan['flush']:08d}.parquet", events)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.archive_watermarks, mapping={str(p): v for p, v in plan["last"].items()})
        pipe.delete(self.keys.archive_plan)
        pipe.execute()
        self.acknowledge(covered)
        covered_ids = {(m[0], m[1]) for m in covered}
        self.buffer = [m for m in self.buffer if (m[0], m[1]) not in covered_ids]
        if new:
            logger.info("archived %d events in flush %d", len(new), plan["flush"])

    def acknowledge(self, messages: list[tuple[int, bytes, dict]]) -> None:
        entry_ids: dict[int, list[bytes]] = defaultdict(list)
        for partition, entry_id, _ in messages:
            entry_ids[partition].append(entry_id)
        pipe = self.client.pipeline(transaction=False)
        for partition, ids in entry_ids.items():
            pipe.xack(self.keys.stream(partition), self.keys.archive_group, *ids)
        pipe.execute()


def archive_frame(events: list[dict]) -> pd.DataFrame:
    """Stream events in the data contract's columns (action names, not codes), in acceptance order."""
    frame = pd.DataFrame([{column: event.get(column) for column in COLUMNS} for event in events], columns=COLUMNS)
    frame["action"] = [ACTIONS[code] for code in frame["action"]]
    return frame


def _write_part(path: Path, events: list[dict]) -> None:
    """Write through a hidden temporary file, fsync it, rename it into place: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table = pa.Table.from_pandas(archive_frame(events), preserve_index=False)
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _clean_temporary(directory: Path) -> None:
    """Temporary files a crash left behind (their rows are still pending in the group and will be rewritten)."""
    if directory.is_dir():
        for tmp in directory.rglob(".part-*.tmp"):
            tmp.unlink(missing_ok=True)

