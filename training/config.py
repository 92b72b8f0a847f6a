"""Every hyperparameter of a training run, in three commented dataclasses (TOML-loadable)."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import ConfigDict, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from contract.events import EventLog

# Every switch is a Literal: a typo ("sesion") is refused naming the field instead of silently training an ablation.
Encoder = Literal["tbgrecall", "sasrec", "bert4rec"]
RetrievalLoss = Literal["sampled_softmax", "softmax", "bce", "gbce"]
Layout = Literal["sessions", "items"]
Positions = Literal["sw-rope", "learned"]
AttentionMask = Literal["session", "causal"]
Negatives = Literal["uniform", "in-batch", "mixed"]
Device = Literal["auto", "cpu", "cuda"]
ENCODERS = get_args(Encoder)
RETRIEVAL_LOSSES = get_args(RetrievalLoss)
# Field values are checked by pydantic in strict mode (RunConfig.validate): "abc", true or 2.5 for an integer, NaN
# or infinity for a number, are refused naming the field, where lax parsing would take some of them.
STRICT = ConfigDict(strict=True, allow_inf_nan=False, revalidate_instances="always")


@dataclass
class ModelConfig:
    __pydantic_config__ = STRICT
    encoder: Encoder = "tbgrecall"
    dim: int = 64  # model width = retrieval dimension
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 200  # tokens per user sequence; also HSTU's fixed attention divisor
    dropout: float = 0.2
    max_items_per_session: int = 32  # strongest actions kept first
    n_future_sessions: int = 3  # m: context token k also predicts sessions k+1..k+m-1, one head per offset
    # TBGRecall's token layout. sessions: a context token before each session's items, the query read at the
    # request's context token. items: one token per acted event, in order, and the query read at the last one,
    # for plain sequences (no contexts, impressions or session ids: a context token would carry only time).
    layout: Layout = "sessions"
    # Ablations of TBGRecall (the defaults are the full model).
    use_context: bool = True  # False: context tokens carry no request context (scenario and time only)
    positions: Positions = "sw-rope"
    attention_mask: AttentionMask = "session"
    type_towers: bool = True  # separate context/item input towers and first-block projections
    previous_session: bool = True  # context tokens also carry the mean of the previous session's item inputs
    gated_residual: bool = False  # TBGRecall: each block's output enters through a learned gate (LiGR, eSASRec)
    mask_prob: float = 0.2  # BERT4Rec: share of items masked in training
    # Content in the item tower (issue 25): what an item is known by before anyone acts on it. An item with no
    # training events gets no id embedding, so a new item's vector is its content's alone.
    item_attributes: bool = False  # a mean bag of embeddings of the items file's `attributes` tokens
    item_text: bool = False  # the frozen sentence encoder's vector of title + description, projected to dim
    semantic_id_levels: int = 0  # > 0: residual k-means codes of the text vector, one learned embedding per code

    @property
    def item_content(self) -> bool:
        return self.item_attributes or self.item_text or self.semantic_id_levels > 0


@dataclass
class LossConfig:
    __pydantic_config__ = STRICT
    retrieval: RetrievalLoss = "sampled_softmax"  # sampled_softmax is L_nce; softmax scores the whole catalogue
    n_negatives: int = 256
    # in-batch: the batch's positives, with the logQ correction; mixed: half of n_negatives from the batch's
    # positives, half uniform, with the correction of that mixture
    negatives: Negatives = "uniform"
    gbce_t: float = 0.75  # gBCE calibration
    # Scores are cosine / temperature. Every sampled-softmax run so far used 0.05 (0.1 is untried there); the
    # full softmax does better at 0.1, which bench/quality.py uses (BENCHMARKS.md, MovieLens-100K).
    temperature: float = 0.05
    show_weight: float = 1.0  # weight of shown-not-acted positives in the retrieval loss (acted ones weigh 1)
    click_weight: float = 1.0  # L_click (TBGRecall only: needs shown-not-clicked items)
    pay_weight: float = 1.0  # L_pay
    future_weight: float = 0.5  # weight of the heads for sessions k+1.. relative to session k
    # Leave the other positives of a pair's target session (its clicks and shown items) out of its negatives:
    # they are right answers for the same query, not wrong ones. Off: no effect measured (BENCHMARKS.md).
    mask_session_positives: bool = False


@dataclass
class TrainConfig:
    __pydantic_config__ = STRICT
    epochs: int = 40  # an upper bound: early stopping ends most runs sooner
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    # Validations without NDCG improvement before stopping. 20, not 10: on MovieLens-100K one seed in three was
    # still improving slowly (0.0935 -> 0.1136 NDCG@10), and nothing got worse (BENCHMARKS.md); the best epoch is
    # restored, and the time budget bounds the cost.
    patience: int = 20
    eval_k: int = 10  # early stopping watches NDCG@eval_k
    refit: bool = False  # then retrain on all the data, holdout included, for the best epoch count, if that fits
    # the time budget
    valid_max_cases: int = 3000
    seed: int = 0
    deterministic: bool = False
    device: Device = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    recency_days: float = 0.0  # > 0: train on the last N days of events only
    threads: int = 0  # torch CPU threads; 0 = torch's default
    time_budget_s: float = 0.0  # > 0: no epoch starts that would end past this many seconds of training
    # A Parquet log with more events is streamed in shards of whole users of about this many events (peak memory
    # follows the shard, not the log: BENCHMARKS.md); a smaller one is held whole.
    shard_events: int = 2_000_000


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> RunConfig:
        return cls().updated(payload)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        return cls().updated(read_toml(path))

    def updated(self, payload: dict) -> RunConfig:
        """A copy with the fields `payload` names ({"model": {...}, "loss": {...}, "train": {...}}) replaced."""
        unknown = set(payload) - {"model", "loss", "train"}
        if unknown:
            raise ValueError(f"unknown section(s): {', '.join(sorted(unknown))} (expected model, loss, train)")
        return RunConfig(**{name: _build(getattr(self, name), payload.get(name, {}))
                            for name in ("model", "loss", "train")})

    def validate(self) -> RunConfig:
        """The same config; a ValueError naming the first field with a value of the wrong kind or out of range."""
        for section in ("model", "loss", "train"):
            problem = _field_problems(section, getattr(self, section))
            if problem:
                raise ValueError(problem)
        if self.model.dim % self.model.n_heads:
            raise ValueError("model.dim must be a multiple of model.n_heads")
        if self.model.max_len < 4:
            raise ValueError("model.max_len must be at least 4")
        for name, value in (("model.dropout", self.model.dropout), ("model.mask_prob", self.model.mask_prob)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        for name, value in (("model.dim", self.model.dim), ("model.n_layers", self.model.n_layers),
                            ("model.n_heads", self.model.n_heads), ("model.n_future_sessions",
                                                                    self.model.n_future_sessions),
                            ("loss.n_negatives", self.loss.n_negatives), ("loss.temperature", self.loss.temperature),
                            ("train.batch_size", self.train.batch_size),
                            ("train.lr", self.train.lr), ("train.shard_events", self.train.shard_events)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0 <= self.model.semantic_id_levels <= 8:
            raise ValueError(f"model.semantic_id_levels must be 0 (none) to 8, got {self.model.semantic_id_levels}")
        if self.train.epochs < 0:
            raise ValueError(f"train.epochs must be 0 (an untrained model) or more, got {self.train.epochs}")
        return self


def _field_problems(section: str, config) -> str | None:
    """What is wrong with the first field of `config` whose value does not fit its annotation, or None."""
    try:
        _validator(type(config)).validate_python(config)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"][0].lower() + first["msg"][1:]
        return f"{'.'.join([section, *map(str, first['loc'])])}: {message}, got {first['input']!r}"
    return None


@cache
def _validator(config_class: type) -> TypeAdapter:
    return TypeAdapter(config_class)


def uses_context_tokens(config: ModelConfig) -> bool:
    """Whether sequences hold context tokens (TBGRecall's session layout) or only the acted items."""
    return config.encoder == "tbgrecall" and config.layout == "sessions"


def reads_event_sessions(config: ModelConfig) -> bool:
    """TBGRecall's items layout reads every event as its own session, so clicks keep their order."""
    return config.encoder == "tbgrecall" and config.layout == "items"


def readable_log(log: EventLog, config: ModelConfig) -> EventLog:
    """`log` as the encoder reads it (see `reads_event_sessions`)."""
    return log.event_sessions() if reads_event_sessions(config) else log


def read_toml(path: str | Path) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def _build(base, values: dict):
    known = {f.name for f in fields(base)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {type(base).__name__} option(s): {', '.join(sorted(unknown))}")
    return replace(base, **values)
