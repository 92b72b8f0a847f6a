"""Data-parallel training on torch.distributed: N processes, each on its own shard of users, with gradients
averaged by DistributedDataParallel (gloo on CPU, NCCL on GPU).

Rank 0 alone validates, decides early stopping and the time budget, and writes the run; the other ranks wait for
its decision. `recall train --nproc N` starts N local processes through torch's own launcher
(`torch.distributed.run`, which is what `torchrun` runs). A multi-node job runs the same entry point under
`torchrun --nnodes ... --rdzv-endpoint ...` (README). One process is the plain, undistributed path.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from contract.events import EventLog
from contract.user_shards import user_hash

# Rank 0 shards the log and validates while the others wait for it: far longer than a training step. Those waits
# run on their own gloo group with this timeout; the training collectives keep torch's default, so a dead peer
# stops the job in minutes, not hours.
WAIT_FOR_RANK_0 = timedelta(hours=3)
_waits: dist.ProcessGroup | None = None


def join_from_environment(device: torch.device) -> None:
    """Join the process group the launcher describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); nothing when
    the process runs alone."""
    global _waits
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _waits = dist.new_group(backend="gloo", timeout=WAIT_FOR_RANK_0)


def leave() -> None:
    global _waits
    if dist.is_initialized():
        dist.destroy_process_group()
    _waits = None


def rank_and_world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (rank 0 sharding the log, writing the run)."""
    if dist.is_initialized():
        dist.barrier(group=_waits)


def from_main(value: object) -> object:
    """Rank 0's `value` on every rank (the settings it chose, its early-stopping decision). It travels as JSON, not
    pickle: no rank unpickles what arrives over the network. The other ranks wait here while rank 0 validates."""
    if not dist.is_initialized():
        return value
    payload = json.dumps(value).encode() if is_main() else b""
    size = torch.tensor([len(payload)], dtype=torch.int64)
    dist.broadcast(size, src=0, group=_waits)
    data = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if is_main() else \
        torch.empty(int(size.item()), dtype=torch.uint8)
    dist.broadcast(data, src=0, group=_waits)
    return json.loads(data.numpy().tobytes())


def every_rank_has(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every rank: the ranks' shards hold different numbers of batches, and each step
    must be taken by all of them together (the gradient average waits for every rank)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def total(values: np.ndarray | float, device: torch.device) -> np.ndarray | float:
    """The sum of `values` (a count, or counts per item) over the ranks."""
    if not dist.is_initialized():
        return values
    summed = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    dist.all_reduce(summed)
    return summed.cpu().numpy() if np.ndim(values) else float(summed.item())


def own_users(log: EventLog, rank: int, world: int) -> EventLog:
    """The events of this rank's users: a disjoint shard by user-id hash, the same one on every run."""
    if world == 1:
        return log
    user_ids = log.vocabs.users.decode(log.active_users)
    owned = user_hash(user_ids) % np.uint64(world) == rank
    return log.take(np.repeat(owned, np.diff(log.user_offsets)))


def own_shards(n_shards: int, rank: int, world: int) -> np.ndarray:
    """The user shards (of a sharded log) this rank trains on."""
    return np.arange(rank, n_shards, world)


def parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` wrapped to average gradients over the ranks (it is itself when alone). Its buffers (the items'
    side information) are the same data on every rank, so they are not re-sent each step."""
    if not dist.is_initialized():
        return module
    device_ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
