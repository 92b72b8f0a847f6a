"""Training loop: AdamW, warm-up + cosine, clipping, bf16 autocast on CUDA, validation with early stopping on
NDCG@K, deterministic mode, warm start from an earlier run (incremental training), and an optional refit on all
the data (the validation holdout included) for the epoch count early stopping chose."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from contract.errors import DataError
from contract.events import EventLog
from contract.tokens import TokenTable, build_tokens, collate, session_table, training_windows
from contract.user_shards import UserShards
from evaluation.evaluate import evaluate
from evaluation.splits import Split, holdout_time, leave_one_out, sample_cases, temporal_split
from training import distributed
from training.config import LossConfig, RunConfig, readable_log, uses_context_tokens
from training.content_fit import fit_content_head
from training.item_content import item_content
from training.losses import log_item_frequency, total_loss
from training.model import RecallModel, grow_state
from training.recommender import EncoderRecommender, to_tensors

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: RecallModel
    metrics: dict[str, float]  # best validation metrics
    history: list[dict] = field(default_factory=list)  # one row per epoch
    seconds: float = 0.0
    sequences_per_second: float = 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def validation_split(log: EventLog, protocol: str, max_cases: int, seed: int) -> Split:
    """Hold out what early stopping watches: the last target of `max_cases` sampled users (loo) or the latest 10%
    (temporal).

    Under loo the users not sampled keep their last target for training. The temporal holdout includes users
    first seen in it, as the service meets them: with a context and no history. On session data where most users
    visit once (trivago) the warm users alone are a few dozen cases, too few to choose an epoch by."""
    split = (temporal_split(log, test_fraction=0.1, include_cold_users=True) if protocol == "temporal"
             else leave_one_out(log, max_cases=max_cases, seed=seed))
    if len(split.cases) == 0:
        raise DataError(str(log.source), f"nothing to validate on: the {protocol} holdout has no session with a "
                        "click or a stronger action (the log is too small or too short)")
    return sample_cases(split, max_cases, seed)


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            pool_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches of window indices whose lengths are close: attention cost grows with the padded length
    squared, so sorting within pools of `pool_batches` batches saves most of the padding."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainingData:
    tokens: TokenTable
    windows: np.ndarray  # (W, 2) session ranges
    lengths: np.ndarray  # (W,) tokens per window


def prepare_data(log: EventLog, config: RunConfig) -> TrainingData:
    table = session_table(log, config.model.max_items_per_session)
    tokens = build_tokens(table, with_context=uses_context_tokens(config.model))
    windows = training_windows(table, tokens, config.model.max_len)
    return TrainingData(tokens, windows, tokens.offsets[windows[:, 1]] - tokens.offsets[windows[:, 0]])


class InMemoryData:
    """A log held whole (this rank's users of it): prepared once, the same windows every epoch."""

    def __init__(self, log: EventLog, config: RunConfig, device: torch.device):
        self.data = prepare_data(log, config)
        self.n_windows = int(distributed.total(len(self.data.windows), device))  # over all ranks
        self.item_counts = distributed.total(np.bincount(self.data.tokens.features["item"], minlength=log.n_items),
                                             device)
        self.item_log_prob = log_item_frequency(torch.as_tensor(self.item_counts, device=device))

    def parts(self, rng: np.random.Generator) -> Iterator[TrainingData]:
        yield self.data


class StreamedData:
    """A sharded log (contract/user_shards.py): each epoch reads this rank's shards one at a time, in a new order,
    so memory holds one shard. `train_part(i)` is what training sees of shard i."""

    def __init__(self, shards: UserShards, shard_ids: np.ndarray, train_part: Callable[[int], EventLog],
                 config: RunConfig, device: torch.device):
        self.shards, self.shard_ids, self.train_part, self.config = shards, shard_ids, train_part, config
        # Windows per epoch over all ranks, for the schedule: rank 0's first shard times the shards, on every rank
        # (the ranks' learning rates must agree).
        first = len(prepare_data(train_part(int(shard_ids[0])), config).windows) if len(shard_ids) else 0
        self.n_windows = int(distributed.from_main(first * shards.n_shards))
        # In-batch logQ from the events per item over the whole log, counted by the sharding pass.
        self.item_counts = shards.item_events
        self.item_log_prob = log_item_frequency(torch.from_numpy(shards.item_events).to(device))

    def parts(self, rng: np.random.Generator) -> Iterator[TrainingData]:
        for shard in rng.permutation(self.shard_ids):
            yield prepare_data(self.train_part(int(shard)), self.config)


class BatchLoss(torch.nn.Module):
    """The training loss of one batch as one module's forward: DistributedDataParallel averages the gradients of
    what runs inside a forward."""

    def __init__(self, model: RecallModel):
        super().__init__()
        self.model = model

    def forward(self, features: dict[str, torch.Tensor], loss: LossConfig,
                item_log_prob: torch.Tensor) -> torch.Tensor | None:
        pairs = self.model.encoder.training_pairs(features, loss.future_weight)
        alone = distributed.rank_and_world()[1] == 1
        if len(pairs) == 0 and alone:
            return None
        total = total_loss(pairs, self.model.item_tower, loss, self.model.task_bias, item_log_prob).total \
            if len(pairs) else 0.0
        if alone:
            return total
        # With peers every parameter takes part in every step (a task head with no click or pay in the batch, a
        # batch with no pairs at all), so each rank joins each gradient average and DDP need not search the graph
        # for unused parameters.
        return total + sum(parameter.sum() for parameter in self.model.parameters()) * 0.0


def build_model(log: EventLog, config: RunConfig, device: torch.device, init_state: dict | None,
                item_counts: np.ndarray) -> RecallModel:
    """A fresh (or warm-started) model whose item tower holds the log's side information and content.
    `item_counts`: training events per item code over the whole log."""
    codebook = (init_state or {}).get("item_tower.semantic_centroids")  # a warm start keeps its semantic ids
    if codebook is not None and len(codebook) != config.model.semantic_id_levels:
        codebook = None  # other levels: grow_state refuses the start and says why
    content = item_content(log.items, log.n_items, item_counts, config.model, config.train.seed,
                           None if codebook is None else codebook.cpu().numpy())
    model = RecallModel(config.model, log.vocabs.sizes() | {"items": log.n_items} | content.sizes).to(device)
    model.item_tower.set_side_info({name: values.to(device) for name, values in content.side_info.items()})
    if init_state is not None:
        # The warm start's side information stays for the items it knew (a round without an items file must not
        # wipe their categories); an item it had trained, or that has events now, keeps its id.
        grown = grow_state(init_state, model)
        logger.info("warm start; grown tables: %s", ", ".join(grown) or "none")
        if "item_seen" in content.side_info:
            tower = model.item_tower
            tower.item_seen.copy_(torch.maximum(tower.item_seen, content.side_info["item_seen"].to(device)))
            tower.content_head_fitted.zero_()  # fitted again after this training, to the model it ends with
    model.content_stats = content.stats
    return model


def run_epoch(step: torch.nn.Module, source: InMemoryData | StreamedData, optimizer: torch.optim.Optimizer,
              scheduler, config: RunConfig, rng: np.random.Generator, bar_title: str,
              show_progress: bool) -> tuple[list[float], int]:
    """One pass over this rank's windows; returns the batch losses and the number of sequences seen. With peers,
    every rank stops when the first runs out of batches: each step is taken by all of them."""
    step.train()
    device = source.item_log_prob.device
    use_amp = config.train.amp and device.type == "cuda"
    batch_size = math.ceil(config.train.batch_size / distributed.rank_and_world()[1])  # the batch is global
    losses, sequences, started = [], 0, time.perf_counter()
    bar = tqdm(desc=bar_title, disable=None if show_progress else True, leave=False, unit="batch")
    batches = (batch for data in source.parts(rng)
               for batch in ((data, index) for index in length_bucketed_batches(data.lengths, batch_size, rng)))
    while distributed.every_rank_has((batch := next(batches, None)) is not None, device):
        data, batch_index = batch
        features = to_tensors(collate(data.tokens, data.windows[batch_index]), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = step(features, config.loss, source.item_log_prob)
        if loss is None:
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(step.parameters(), config.train.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        sequences += len(batch_index)
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}",
                        seq_s=f"{sequences / max(time.perf_counter() - started, 1e-9):.0f}")
    bar.close()
    return losses, sequences


def train(log: EventLog | UserShards, config: RunConfig, protocol: str = "loo", init_state: dict | None = None,
          show_progress: bool = True) -> TrainResult:
    """Train on `log` (held whole, or sharded on disk), validating on a holdout of it; returns the best model by
    NDCG@eval_k. With peers (training/distributed.py) each rank trains on its own users, and rank 0 validates and
    decides when to stop; its returned model is the one to keep."""
    config.validate()
    cfg, started = config.train, time.perf_counter()
    rank, world = distributed.rank_and_world()
    seed_everything(cfg.seed, cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    valid, source = training_source(log, config, protocol, device, rank, world)
    model = build_model(valid.train, config, device, init_state, source.item_counts)
    step = distributed.parallel(BatchLoss(model), device)
    show_progress = show_progress and rank == 0
    optimizer, scheduler = optimizer_and_schedule(model, source.n_windows, config, cfg.epochs)
    # Each rank its own batch order (reproducible at the same N). torch's random stream stays the same on every
    # rank, so the negatives a batch shares are the same on all: the global batch is one process's batch, with
    # one process's negatives, and N processes follow the single-process recipe.
    rng = np.random.default_rng(cfg.seed + rank)
    metric_name = f"ndcg@{cfg.eval_k}"
    # Histories are built once; the weights change in place. Only rank 0 validates.
    validator = EncoderRecommender(model, valid.train) if rank == 0 else None
    best_metric, best_state, stale, history, sequences, train_seconds = -1.0, None, 0, [], 0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        epoch_started = time.perf_counter()
        losses, seen = run_epoch(step, source, optimizer, scheduler, config, rng, f"epoch {epoch}/{cfg.epochs}",
                                 show_progress)
        sequences, train_seconds = sequences + seen, train_seconds + time.perf_counter() - epoch_started
        stop = False
        if validator is not None:
            metrics = evaluate(valid, [validator], [cfg.eval_k])[0].overall
            history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else 0.0, **metrics,
                            "seconds": time.perf_counter() - started})
            _report(history[-1], metric_name, sequences * world / max(train_seconds, 1e-9), show_progress)
            if metrics[metric_name] > best_metric:
                best_metric, best_state, stale = metrics[metric_name], copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                stop = stale >= cfg.patience
            if not stop and out_of_budget(cfg.time_budget_s, time.perf_counter() - started, history):
                logger.info("time budget of %.0f s reached after epoch %d", cfg.time_budget_s, epoch)
                stop = True
        if distributed.from_main(stop):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    best = distributed.from_main(max(history, key=lambda row: row[metric_name]) if history else {})
    if cfg.refit and best:
        refit_seconds = best["epoch"] * train_seconds / epoch  # at this run's speed
        if distributed.from_main(
                cfg.time_budget_s <= 0 or time.perf_counter() - started + refit_seconds <= cfg.time_budget_s):
            del model, step, optimizer, scheduler, source, validator, best_state  # the refit needs the memory
            if device.type == "cuda":
                torch.cuda.empty_cache()
            model, seen, seconds = refit(log, config, device, init_state, best["epoch"], show_progress)
            sequences, train_seconds = sequences + seen, train_seconds + seconds
            best = {**best, "refit_epochs": best["epoch"]}  # the validation figures are the first run's
        else:  # the first run's best model, rather than a refit cut short by the budget
            logger.info("no refit: %d epochs (~%.0f s) would end past the %.0f s budget", best["epoch"],
                        refit_seconds, cfg.time_budget_s)
            best = {**best, "refit_epochs": 0}
    if config.model.item_content:
        model.content_stats["head"] = fit_content_head(model.item_tower, cfg.seed, show_progress=show_progress)
        logger.info("content head: %s", model.content_stats["head"])
    model.eval()
    return TrainResult(model=model, metrics={k: v for k, v in best.items() if k != "seconds"}, history=history,
                       seconds=time.perf_counter() - started,
                       sequences_per_second=distributed.total(sequences, device) / max(train_seconds, 1e-9))


def training_source(log: EventLog | UserShards, config: RunConfig, protocol: str, device: torch.device,
                    rank: int, world: int) -> tuple[Split, InMemoryData | StreamedData]:
    """The validation split (its `train` is what validation histories come from) and this rank's training data.

    A sharded log validates on a sample of shard 0's users. Under temporal every shard drops the events after
    shard 0's holdout time; under loo only the sampled users lose their last target, so the other shards train on
    everything."""
    if isinstance(log, EventLog):
        valid = validation_split(readable_log(log, config.model), protocol, config.train.valid_max_cases,
                                 config.train.seed)
        return valid, InMemoryData(distributed.own_users(valid.train, rank, world), config, device)
    first = recent_readable(log.load(0), config, log.max_timestamp)
    valid = validation_split(first, protocol, config.train.valid_max_cases, config.train.seed)
    split_time = holdout_time(first) if protocol == "temporal" else None  # the one validation_split holds out

    def train_part(shard_id: int) -> EventLog:
        if shard_id == 0:
            return valid.train
        shard = recent_readable(log.load(shard_id), config, log.max_timestamp)
        return temporal_split(shard, split_time).train if split_time is not None else shard

    return valid, StreamedData(log, distributed.own_shards(log.n_shards, rank, world), train_part, config, device)


def recent_readable(log: EventLog, config: RunConfig, max_timestamp: int) -> EventLog:
    """`log` as the encoder reads it, within the run's recency window (`train.recency_days`)."""
    if config.train.recency_days > 0 and log.has_timestamp:
        log = log.take(log.timestamp >= max_timestamp - config.train.recency_days * 86_400)
    return readable_log(log, config.model)


def out_of_budget(budget_s: float, elapsed_s: float, history: list[dict]) -> bool:
    """Whether another epoch, as long as the slowest so far, would end past the budget (0: no budget)."""
    if budget_s <= 0 or not history:
        return False
    durations = [b["seconds"] - a["seconds"] for a, b in zip([{"seconds": 0.0}, *history], history, strict=False)]
    return elapsed_s + max(durations) > budget_s


def optimizer_and_schedule(model: RecallModel, n_windows: int, config: RunConfig, epochs: int):
    """AdamW with linear warm-up, then cosine decay to zero at the end of `epochs`."""
    cfg = config.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The batch is global (run_epoch splits it over the ranks), so N processes take the steps one would.
    total_steps = max(math.ceil(n_windows / cfg.batch_size), 1) * epochs
    warmup = min(cfg.warmup_steps, total_steps // 10 + 1)  # small data sets: do not spend the run warming up
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total_steps))


def refit(log: EventLog | UserShards, config: RunConfig, device: torch.device, init_state: dict | None,
          epochs: int, show_progress: bool) -> tuple[RecallModel, int, float]:
    """A fresh model trained on the whole log, the validation holdout included, on the first run's schedule stopped
    after `epochs`: the holdout is the most recent behaviour, which the final model should learn from.
    Returns (model, sequences, seconds)."""
    seed_everything(config.train.seed, config.train.deterministic)
    rank, world = distributed.rank_and_world()
    if isinstance(log, EventLog):
        whole = readable_log(log, config.model)
        source = InMemoryData(distributed.own_users(whole, rank, world), config, device)
    else:
        whole = log.load(0)
        source = StreamedData(log, distributed.own_shards(log.n_shards, rank, world),
                              lambda shard: recent_readable(log.load(shard), config, log.max_timestamp), config, device)
    model = build_model(whole, config, device, init_state, source.item_counts)
    step = distributed.parallel(BatchLoss(model), device)
    optimizer, scheduler = optimizer_and_schedule(model, source.n_windows, config, config.train.epochs)
    rng, sequences, started = np.random.default_rng(config.train.seed + rank), 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        losses, seen = run_epoch(step, source, optimizer, scheduler, config, rng, f"refit {epoch}/{epochs}",
                                 show_progress)
        sequences += seen
        logger.info("refit epoch %d loss %.4f", epoch, float(np.mean(losses)) if losses else 0.0)
    return model, sequences, time.perf_counter() - started


def _report(row: dict, metric_name: str, sequences_per_second: float, show_progress: bool) -> None:
    logger.info("epoch %d loss %.4f %s %.4f", row["epoch"], row["loss"], metric_name, row[metric_name])
    if show_progress:
        tqdm.write(f"epoch {row['epoch']}: loss {row['loss']:.4f}  valid {metric_name} {row[metric_name]:.4f}  "
                   f"({sequences_per_second:.0f} seq/s)")
