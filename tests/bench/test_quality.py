import pytest

from bench.quality import mean_over_seeds, ndcg_cell


def test_rows_of_several_seeds_become_their_mean_with_a_standard_error():
    rows = [{"model": "TBGRecall", "ndcg@10": ndcg, "recall@10": recall, "epochs": epochs}
            for ndcg, recall, epochs in ((0.070, 0.14, 40), (0.074, 0.16, 50), (0.078, 0.15, 60))]
    merged = mean_over_seeds(rows)
    assert merged["model"] == "TBGRecall" and merged["seeds"] == 3
    assert merged["ndcg@10"] == pytest.approx(0.074) and merged["recall@10"] == pytest.approx(0.15)
    assert merged["epochs"] == pytest.approx(50)
    assert merged["ndcg@10_se"] == pytest.approx(0.004 / 3**0.5)  # sample sd 0.004 over sqrt(3)
    assert ndcg_cell(merged) == "0.0740 ± 0.0023"


def test_a_single_seed_shows_no_error_bar():
    merged = mean_over_seeds([{"model": "SASRec", "ndcg@10": 0.08}])
    assert merged["ndcg@10_se"] == 0.0 and ndcg_cell(merged) == "0.0800"
