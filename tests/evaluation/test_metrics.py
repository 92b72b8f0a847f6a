"""Every metric on tiny examples computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import coverage, per_case_metrics, summarize
from evaluation.splits import EvalCases


def cases_with_targets(targets: list[list[int]]) -> EvalCases:
    n = len(targets)
    return EvalCases(
        user=np.arange(n, dtype=np.int32), context=np.zeros(n, np.int32), scenario=np.zeros(n, np.int32),
        request_time=np.zeros(n, np.int64),
        target_offsets=np.r_[0, np.cumsum([len(t) for t in targets])].astype(np.int64),
        target_items=np.array([i for t in targets for i in t], dtype=np.int32),
    )


def test_single_target_at_rank_two():
    values = per_case_metrics(np.array([[5, 7, 9]]), cases_with_targets([[7]]), ks=[1, 3])
    assert values["recall@1"][0] == 0 and values["recall@3"][0] == 1
    assert values["hitrate@1"][0] == 0 and values["hitrate@3"][0] == 1
    assert values["ndcg@3"][0] == pytest.approx(1 / math.log2(3))  # ideal DCG for one target is 1
    assert values["mrr"][0] == pytest.approx(0.5)


def test_ndcg_is_normalised_by_the_ideal_for_the_actual_number_of_targets():
    # Two targets {1, 2}; the list hits them at ranks 1 and 3.
    values = per_case_metrics(np.array([[1, 9, 2, 8]]), cases_with_targets([[1, 2]]), ks=[4, 1])
    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert values["ndcg@4"][0] == pytest.approx(dcg / ideal)
    assert values["recall@4"][0] == 1.0
    # At K=1 only one target fits: the ideal is one hit, and the list has it.
    assert values["ndcg@1"][0] == 1.0 and values["recall@1"][0] == 0.5


def test_no_hit_gives_zero_everywhere_and_padding_never_hits():
    values = per_case_metrics(np.array([[0, 0, 3]]), cases_with_targets([[4]]), ks=[3])
    assert values["recall@3"][0] == values["ndcg@3"][0] == values["mrr"][0] == 0


def test_summary_is_the_mean_over_cases_with_coverage():
    recommended = np.array([[1, 2], [3, 1]])
    summary = summarize(recommended, cases_with_targets([[1], [2]]), ks=[2], n_items=11)
    assert summary["recall@2"] == 0.5  # case 1 hits, case 2 misses
    assert summary["mrr"] == 0.5
    assert summary["coverage@2"] == pytest.approx(3 / 10)  # items 1, 2, 3 of a catalogue of 10
    assert coverage(recommended, 1, 11) == pytest.approx(2 / 10)
