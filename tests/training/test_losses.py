"""Losses: gBCE against its formula, the full softmax in chunks, and the task terms vanishing when a batch has nothing
to learn from."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from contract.columns import CLICK, PAY, SHOW
from training import losses
from training.config import LossConfig, ModelConfig
from training.item_tower import ItemTower
from training.losses import (
    binary_negatives_loss,
    full_softmax_loss,
    gbce_beta,
    retrieval_loss,
    sample_negatives,
    scenario_mean,
    session_positives,
    total_loss,
)
from training.pairs import Pairs


def test_gbce_beta_and_loss_match_the_formula():
    n_negatives, n_items, t = 4, 101, 0.75
    alpha = n_negatives / (n_items - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    assert gbce_beta(n_negatives, n_items, t) == pytest.approx(beta)
    positive, negatives = torch.tensor([1.5]), torch.tensor([[0.2, -0.3, 2.0, -1.0]])
    expected = (-math.log(torch.sigmoid(positive).item() ** beta)
                - sum(math.log(1 - torch.sigmoid(n).item()) for n in negatives[0])) / 5
    assert binary_negatives_loss(positive, negatives, beta).item() == pytest.approx(expected, rel=1e-5)
    # beta = 1 is plain binary cross-entropy over the positive and its negatives
    bce = F.binary_cross_entropy_with_logits(torch.cat([positive, negatives[0]]),
                                             torch.tensor([1.0, 0, 0, 0, 0]))
    assert binary_negatives_loss(positive, negatives, 1.0).item() == pytest.approx(bce.item(), rel=1e-5)


def test_scenario_mean_averages_within_then_sums_over_scenarios():
    values = torch.tensor([1.0, 3.0, 10.0])
    scenario = torch.tensor([0, 0, 1])
    assert scenario_mean(values, scenario, torch.ones(3)).item() == pytest.approx(2.0 + 10.0)


def session_pairs(actions: list[int], groups: list[int]) -> Pairs:
    torch.manual_seed(0)
    n = len(actions)
    query = F.normalize(torch.randn(n, 8), dim=-1)
    return Pairs(query=query, positive=torch.arange(1, n + 1), action=torch.tensor(actions),
                 scenario=torch.zeros(n, dtype=torch.long), weight=torch.ones(n), group=torch.tensor(groups),
                 click_query=query.clone(), pay_query=query.clone())


def test_click_and_pay_terms_vanish_without_clicks_or_pays():
    tower = ItemTower(ModelConfig(dim=8), {"items": 20, "categories": 2, "sellers": 2})
    config = LossConfig(n_negatives=5)
    no_click = total_loss(session_pairs([SHOW, SHOW, SHOW], [0, 0, 0]), tower, config, torch.zeros(2))
    assert no_click.click == 0.0 and no_click.pay == 0.0 and no_click.retrieval > 0
    clicked = total_loss(session_pairs([SHOW, CLICK, SHOW], [0, 0, 0]), tower, config, torch.zeros(2))
    assert clicked.click > 0 and clicked.pay == 0.0
    paid = total_loss(session_pairs([SHOW, CLICK, PAY], [0, 0, 0]), tower, config, torch.zeros(2))
    assert paid.click > 0 and paid.pay > 0


def test_click_term_needs_impressions():
    # An interaction log (all clicks, nothing shown-not-clicked) has no negatives for L_click.
    tower = ItemTower(ModelConfig(dim=8), {"items": 20, "categories": 2, "sellers": 2})
    terms = total_loss(session_pairs([CLICK, CLICK], [0, 1]), tower, LossConfig(n_negatives=5), torch.zeros(2))
    assert terms.click == 0.0


@pytest.mark.parametrize("retrieval", ["sampled_softmax", "softmax", "bce", "gbce"])
@pytest.mark.parametrize("negatives", ["uniform", "in-batch", "mixed"])
def test_every_retrieval_loss_is_finite_and_differentiable(retrieval, negatives):
    tower = ItemTower(ModelConfig(dim=8), {"items": 20, "categories": 2, "sellers": 2})
    pairs = session_pairs([CLICK, CLICK, SHOW], [0, 0, 1])
    pairs.query.requires_grad_(True)
    config = LossConfig(retrieval=retrieval, negatives=negatives, n_negatives=6)
    terms = total_loss(pairs, tower, config, torch.zeros(2), torch.log(torch.full((20,), 1 / 20)))
    terms.total.backward()
    assert math.isfinite(terms.retrieval) and pairs.query.grad is not None


def test_mixed_negatives_take_half_from_the_batch_and_correct_for_popularity():
    # A batch whose positives are mostly item 3, the catalogue's most frequent item: half the negatives come from
    # those positives, and item 3's logits are lowered by its expected count over a uniform draw's, while a rare
    # item, drawn less often than by uniform draws alone, counts for more than a uniform negative.
    torch.manual_seed(0)
    n_items = 1000
    counts = torch.ones(n_items)
    counts[3] = 10_000.0
    item_log_prob = losses.log_item_frequency(counts)
    pairs = session_pairs([CLICK] * 8, list(range(8)))
    pairs.positive = torch.tensor([3, 3, 3, 3, 3, 3, 7, 9])
    negatives, correction = sample_negatives(pairs, LossConfig(negatives="mixed", n_negatives=64), n_items,
                                             item_log_prob)
    assert len(negatives) == 64 and torch.isin(negatives[:32], pairs.positive).all()
    popular = correction[negatives == 3]
    expected = math.log(0.5 * item_log_prob[3].exp().item() * (n_items - 1) + 0.5)
    assert len(popular) > 0 and popular.allclose(torch.tensor(expected)) and expected > math.log(n_items / 4)
    rare = correction[(negatives != 3) & (negatives != 7) & (negatives != 9)]
    rare_expected = math.log(0.5 * item_log_prob[500].exp().item() * (n_items - 1) + 0.5)
    assert rare.allclose(torch.tensor(rare_expected)) and math.log(0.5) < rare_expected < 0
    with pytest.raises(ValueError, match="log frequencies"):
        sample_negatives(pairs, LossConfig(negatives="mixed"), n_items, None)


def test_full_softmax_in_chunks_gives_the_same_loss_and_gradients(monkeypatch):
    # A large catalogue goes through the softmax in memory-bounded chunks; training must not notice.
    torch.manual_seed(0)
    query = torch.randn(10, 8, requires_grad=True)
    catalogue = F.normalize(torch.randn(30, 8), dim=-1).requires_grad_(True)
    positive = torch.randint(1, 30, (10,))
    whole = full_softmax_loss(query, catalogue, positive)
    whole_grads = torch.autograd.grad(whole.sum(), [query, catalogue])
    monkeypatch.setattr(losses, "SOFTMAX_CHUNK_LOGITS", 3 * 30)  # three pairs per chunk
    chunks = []
    monkeypatch.setattr(losses, "checkpoint", lambda *args, **kwargs: chunks.append(args[1]) or checkpoint(
        *args, **kwargs))
    chunked = full_softmax_loss(query, catalogue, positive)
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    chunked_grads = torch.autograd.grad(chunked.sum(), [query, catalogue])
    torch.testing.assert_close(chunked, whole)
    for chunked_grad, whole_grad in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(chunked_grad, whole_grad)
    # Masked logits land in the chunks that hold their pairs.
    masked = (torch.tensor([0, 4, 4, 9]), torch.tensor([7, 2, 3, 11]))
    positive = torch.where(torch.isin(positive, torch.tensor([7, 2, 3, 11])), 1, positive)
    chunked_masked = full_softmax_loss(query, catalogue, positive, masked)
    monkeypatch.setattr(losses, "SOFTMAX_CHUNK_LOGITS", 10**9)
    torch.testing.assert_close(chunked_masked, full_softmax_loss(query, catalogue, positive, masked))
    assert (chunked_masked < full_softmax_loss(query, catalogue, positive))[[0, 4, 9]].all()


def test_a_sessions_other_positives_are_found_for_each_pair():
    # Session 0 clicked items 5 and 6 (6 twice: two heads), session 1 items 5 and 7.
    pairs = session_pairs([CLICK] * 5, [0, 0, 0, 1, 1])
    pairs.positive = torch.tensor([5, 6, 6, 5, 7])
    rows, items = session_positives(pairs, n_items=8)
    assert list(zip(rows.tolist(), items.tolist(), strict=True)) == [(0, 6), (1, 5), (2, 5), (3, 7), (4, 5)]


def test_masked_session_positives_are_not_negatives():
    # Items 3 and 4 clicked in one session are both right answers for its query: with the mask, each pair's loss
    # is what it would be without the other item in the catalogue.
    tower = ItemTower(ModelConfig(dim=8), {"items": 12, "categories": 2, "sellers": 2})
    pairs = session_pairs([CLICK, CLICK, CLICK], [0, 0, 1])
    pairs.positive = torch.tensor([3, 4, 3])
    config = LossConfig(retrieval="softmax", temperature=0.1, mask_session_positives=True)
    logits = (pairs.query / 0.1) @ tower(torch.arange(12)).T
    expected = [F.cross_entropy(logits[n, keep], torch.tensor(keep.index(int(pairs.positive[n]))))
                for n, keep in ((0, [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]), (1, [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]),
                                (2, list(range(1, 12))))]
    torch.testing.assert_close(retrieval_loss(pairs, tower, config), torch.stack(expected).mean())
    # In-batch negatives are the batch's positives (3 and 4): session 0's pairs have none left, session 1's
    # pair keeps item 4.
    sampled = LossConfig(retrieval="sampled_softmax", negatives="in-batch", temperature=0.1)
    with_mask = retrieval_loss(pairs, tower, replace(sampled, mask_session_positives=True))
    torch.testing.assert_close(with_mask, F.cross_entropy(logits[2, [3, 4]], torch.tensor(0)) / 3)
    assert retrieval_loss(pairs, tower, sampled) > with_mask


def test_the_full_softmax_runs_under_bf16_autocast():
    # Training on a GPU runs the loss under bf16 autocast: the masked logits must take the logits' dtype.
    torch.manual_seed(0)
    query = torch.randn(6, 8, requires_grad=True)
    catalogue = F.normalize(torch.randn(20, 8), dim=-1)
    positive = torch.tensor([1, 2, 3, 4, 5, 6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for masked in (None, (torch.tensor([0, 3]), torch.tensor([9, 10]))):
            loss = full_softmax_loss(query, catalogue, positive, masked)
            loss.sum().backward()
            assert torch.isfinite(loss).all() and torch.isfinite(query.grad).all()
