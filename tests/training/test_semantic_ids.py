"""Semantic ids: items with similar content share their first codes, and the report says how much each level
separates."""

from __future__ import annotations

import numpy as np

from training.semantic_ids import codes_per_level, fit_semantic_ids


def test_items_near_each_other_share_their_first_code_and_levels_separate_more():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(16, 32))
    group = np.repeat(np.arange(16), 40)
    vectors = (centres[group] + 0.05 * rng.normal(size=(len(group), 32))).astype(np.float32)
    semantic = fit_semantic_ids(vectors, levels=3, n_codes=16)
    first = semantic.codes[:, 0]
    same_code = first[:, None] == first[None, :]
    same_group = group[:, None] == group[None, :]
    assert same_code[same_group].mean() > 0.8  # near-identical items mostly share their first code
    assert same_code[~same_group].mean() < 0.1  # ... and items of other groups mostly do not
    stats = semantic.stats()
    shares = stats["distinct_share_by_level"]
    assert shares[0] <= 16 / len(group) and shares[0] < shares[1] <= shares[2]
    assert 0.0 <= stats["colliding_share"] < 1.0


def test_codes_per_level_follow_the_catalogue():
    assert codes_per_level(100) == 16 and codes_per_level(4096) == 64 and codes_per_level(10**7) == 256
