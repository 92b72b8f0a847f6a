"""The item tower gives items distinct directions from the start, so retrieval training does not begin by pulling
a collapsed catalogue apart."""

from __future__ import annotations

import torch

from training.item_tower import ItemTower


def test_fresh_item_vectors_are_unit_length_and_point_apart():
    torch.manual_seed(0)
    tower = ItemTower(n_items=200, n_categories=5, n_sellers=2, dim=64).eval()
    vectors = tower(torch.arange(1, 200))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(199), atol=1e-5)
    cosines = vectors @ vectors.T
    mean_off_diagonal = (cosines.sum() - cosines.diagonal().sum()) / (199 * 198)
    assert mean_off_diagonal < 0.9  # default MLP biases made it 0.99: every item nearly the same vector
