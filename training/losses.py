"""Training losses over `Pairs`: the retrieval loss (L_nce as sampled softmax, full softmax, BCE, gBCE) and
TBGRecall's L_click and L_pay. Every term is averaged within each scenario, then summed over scenarios.

Scores are cosine similarities divided by a temperature. gBCE (Petrov & Macdonald, RecSys 2023) with n
negatives out of a catalogue of N items and calibration t:
    alpha = n / (N - 1),  beta = alpha * (t * (1 - 1/alpha) + 1/alpha)
    loss  = (beta * softplus(-s_pos) + sum_j softplus(s_neg_j)) / (1 + n)
which is BCE over the positive and its negatives with the positive's probability raised to the power beta;
beta = 1 gives plain BCE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from contract.columns import CLICK, PAY, SHOW
from training.config import LossConfig
from training.item_tower import ItemTower
from training.pairs import Pairs

# Most (pairs x catalogue) logits the full softmax computes at once (256 MB of float32, a few such tensors with its
# gradient). TBGRecall on a session log has a pair per shown item: 50k pairs over a 100k-item catalogue would be
# 20 GB of logits in one piece.
SOFTMAX_CHUNK_LOGITS = 2**26


@dataclass
class LossTerms:
    total: torch.Tensor
    retrieval: float
    click: float
    pay: float


def scenario_mean(values: torch.Tensor, scenario: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of `values` within each scenario, summed over scenarios (0 when empty)."""
    if values.numel() == 0:
        return values.sum()
    _, group = torch.unique(scenario, return_inverse=True)
    n_groups = int(group.max()) + 1
    sums = torch.zeros(n_groups, device=values.device, dtype=values.dtype).index_add(0, group, values * weight)
    totals = torch.zeros(n_groups, device=values.device, dtype=values.dtype).index_add(0, group, weight)
    return (sums / totals.clamp_min(1e-12)).sum()


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    alpha = n_negatives / max(n_items - 1, 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def binary_negatives_loss(positive_logit: torch.Tensor, negative_logits: torch.Tensor, beta: float,
                          ) -> torch.Tensor:
    """(P,) BCE (beta = 1) or gBCE per pair over its positive (P,) and negatives (P, n); -inf negatives
    (accidental hits) contribute nothing."""
    negatives = F.softplus(negative_logits).masked_fill(torch.isinf(negative_logits), 0.0).sum(-1)
    return (beta * F.softplus(-positive_logit) + negatives) / (1 + negative_logits.shape[-1])


def sample_negatives(pairs: Pairs, config: LossConfig, n_items: int,
                     item_log_prob: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative item codes (n,), logQ correction (n,)) shared by the batch."""
    device = pairs.positive.device
    if config.negatives == "in-batch":
        negatives = torch.unique(pairs.positive)
        if item_log_prob is None:
            return negatives, torch.zeros(len(negatives), device=device)
        return negatives, item_log_prob[negatives]
    if config.negatives == "mixed":
        if item_log_prob is None:
            raise ValueError("mixed negatives need the items' log frequencies for their correction")
        # Half uniform, half drawn from the batch's positives (frequency-proportional: the popular items a model
        # must learn to rank below the right one). Each item's correction is the log of its expected count among
        # the negatives over what uniform draws alone would give it, so the loss keeps uniform negatives' scale.
        n_from_batch = config.n_negatives // 2 if len(pairs.positive) else 0
        from_batch = pairs.positive[torch.randint(0, max(len(pairs.positive), 1), (n_from_batch,), device=device)]
        uniform = torch.randint(1, n_items, (config.n_negatives - len(from_batch),), device=device)
        negatives = torch.cat([from_batch, uniform])
        batch_share = len(from_batch) / config.n_negatives
        expected_over_uniform = batch_share * item_log_prob[negatives].exp() * (n_items - 1) + (1 - batch_share)
        return negatives, torch.log(expected_over_uniform)
    negatives = torch.randint(1, n_items, (config.n_negatives,), device=device)
    return negatives, torch.zeros(len(negatives), device=device)


def session_positives(pairs: Pairs, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pair rows, item codes): for each pair, the positives of the other pairs with its target session (`group`)
    that differ from its own, rows ascending. Their logits are masked out of the pair's negatives. There are
    pairs x (distinct items of the target session) of them: at most max_items_per_session per pair and head."""
    if len(pairs) == 0:
        return pairs.positive, pairs.positive
    # The distinct (session, item) positives, sorted by session: a pair's items are one contiguous run of them.
    session_items = torch.unique(pairs.group * n_items + pairs.positive)
    item_session, items = session_items // n_items, session_items % n_items
    rows, index = _matches(item_session, pairs.group)
    masked = items[index]
    other = masked != pairs.positive[rows]
    return rows[other], masked[other]


def _matches(ordered: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, i) for every ordered[i] == values[n], n ascending: each value's run of equal entries, expanded."""
    start = torch.searchsorted(ordered, values)
    count = torch.searchsorted(ordered, values, right=True) - start
    owner = torch.repeat_interleave(torch.arange(len(values), device=values.device), count)
    run_start = (torch.cumsum(count, 0) - count)[owner]
    return owner, start[owner] + torch.arange(len(owner), device=values.device) - run_start


def _softmax_chunk(query: torch.Tensor, catalogue: torch.Tensor, positive: torch.Tensor,
                   blocked: torch.Tensor, masked_rows: torch.Tensor, masked_items: torch.Tensor) -> torch.Tensor:
    logits = (query @ catalogue.T).masked_fill(blocked, -torch.inf)  # (P, N)
    if len(masked_rows):  # in place: neither the product's nor masked_fill's backward reads these logits
        logits[masked_rows, masked_items] = -torch.inf
    return F.cross_entropy(logits, positive, reduction="none")


def full_softmax_loss(query: torch.Tensor, catalogue: torch.Tensor, positive: torch.Tensor,
                      masked: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(P,) cross-entropy of each pair's positive against the whole catalogue (N, d), leaving out the padding
    item and the `masked` (pair rows ascending, item codes) logits. Beyond SOFTMAX_CHUNK_LOGITS the pairs go in
    chunks whose logits are recomputed in the backward pass instead of kept, so memory stays bounded however
    many pairs a batch has (at the cost of one more matmul)."""
    blocked = torch.zeros(len(catalogue), dtype=torch.bool, device=catalogue.device)
    blocked[0] = True  # the padding item
    no_rows = torch.zeros(0, dtype=torch.long, device=query.device)
    masked_rows, masked_items = masked if masked is not None else (no_rows, no_rows)
    rows = max(1, SOFTMAX_CHUNK_LOGITS // len(catalogue))
    if len(query) <= rows:
        return _softmax_chunk(query, catalogue, positive, blocked, masked_rows, masked_items)
    starts = list(range(0, len(query), rows))
    bounds = torch.searchsorted(masked_rows, torch.tensor([*starts, len(query)], device=query.device)).tolist()
    return torch.cat([checkpoint(_softmax_chunk, query[start:start + rows], catalogue, positive[start:start + rows],
                                 blocked, masked_rows[first:last] - start, masked_items[first:last],
                                 use_reentrant=False)
                      for start, first, last in zip(starts, bounds[:-1], bounds[1:], strict=True)])


def retrieval_loss(pairs: Pairs, item_tower: ItemTower, config: LossConfig,
                   item_log_prob: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's main loss: retrieve each pair's positive item from the catalogue."""
    n_items = item_tower.n_items
    weight = torch.where(pairs.action == SHOW, config.show_weight, 1.0) * pairs.weight
    positive_vectors = item_tower(pairs.positive)
    query = pairs.query / config.temperature  # scaling the (P, d) side is cheaper than any (P, N) logits
    positive_logit = (query * positive_vectors).sum(-1)
    if config.retrieval == "softmax":
        catalogue = item_tower(torch.arange(n_items, device=pairs.query.device))
        masked = session_positives(pairs, n_items) if config.mask_session_positives else None
        per_pair = full_softmax_loss(query, catalogue, pairs.positive, masked)
        return scenario_mean(per_pair, pairs.scenario, weight)
    negatives, correction = sample_negatives(pairs, config, n_items, item_log_prob)
    negative_logits = query @ item_tower(negatives).T - correction  # (P, n)
    accidental = pairs.positive[:, None] == negatives[None, :]
    if config.mask_session_positives:
        rows, items = session_positives(pairs, n_items)
        # every column holding a masked item (uniform negatives may repeat one)
        ordered, column_of = torch.sort(negatives)
        owner, hit = _matches(ordered, items)
        accidental[rows[owner], column_of[hit]] = True
    negative_logits = negative_logits.masked_fill(accidental, -torch.inf)
    if config.retrieval == "sampled_softmax":
        logits = torch.cat([positive_logit[:, None], negative_logits], dim=1)
        per_pair = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device),
                                   reduction="none")
    else:
        beta = gbce_beta(len(negatives), n_items, config.gbce_t) if config.retrieval == "gbce" else 1.0
        per_pair = binary_negatives_loss(positive_logit, negative_logits, beta)
    return scenario_mean(per_pair, pairs.scenario, weight)


def _session_has(pairs: Pairs, rows: int, condition: torch.Tensor) -> torch.Tensor:
    """(rows,) bool: the pair's target session holds at least one pair meeting `condition`."""
    group = pairs.group[:rows]
    _, index = torch.unique(group, return_inverse=True)
    hits = torch.zeros(int(index.max()) + 1 if rows else 0, device=group.device).index_add(
        0, index, condition.float())
    return hits[index] > 0


def task_loss(pairs: Pairs, query: torch.Tensor, positive: torch.Tensor, eligible: torch.Tensor,
              item_tower: ItemTower, temperature: float, bias: torch.Tensor) -> torch.Tensor:
    """BCE of `positive` vs the rest among `eligible` next-session pairs; zero without any positive."""
    rows = len(query)
    if rows == 0 or not bool((positive & eligible).any()):
        return query.sum() * 0.0
    vectors = item_tower(pairs.positive[:rows][eligible])
    logits = (query[eligible] * vectors).sum(-1) / temperature + bias
    per_pair = F.binary_cross_entropy_with_logits(logits, positive[eligible].float(), reduction="none")
    return scenario_mean(per_pair, pairs.scenario[:rows][eligible], torch.ones_like(per_pair))


def total_loss(pairs: Pairs, item_tower: ItemTower, config: LossConfig, task_bias: torch.Tensor,
               item_log_prob: torch.Tensor | None = None) -> LossTerms:
    """retrieval + click_weight * L_click + pay_weight * L_pay (the task terms need TBGRecall's task heads)."""
    retrieval = retrieval_loss(pairs, item_tower, config, item_log_prob)
    click = pay = retrieval * 0.0
    if pairs.click_query is not None and (config.click_weight or config.pay_weight):
        rows = len(pairs.click_query)
        action = pairs.action[:rows]
        # L_click: clicked vs shown-not-clicked, in sessions that logged impressions.
        shown_session = _session_has(pairs, rows, action == SHOW)
        click = task_loss(pairs, pairs.click_query, action >= CLICK, shown_session, item_tower,
                          config.temperature, task_bias[0])
        # L_pay: paid vs the session's other items, in sessions with a pay.
        paid_session = _session_has(pairs, rows, action == PAY)
        pay = task_loss(pairs, pairs.pay_query, action == PAY, paid_session, item_tower, config.temperature,
                        task_bias[1])
    total = retrieval + config.click_weight * click + config.pay_weight * pay
    return LossTerms(total=total, retrieval=retrieval.item(), click=click.item(), pay=pay.item())


def log_item_frequency(counts: torch.Tensor) -> torch.Tensor:
    """log q(item) of in-batch sampling (frequency-proportional), for the logQ correction."""
    smoothed = counts.float() + 1.0
    return torch.log(smoothed / smoothed.sum()).clamp_min(math.log(1e-12))
