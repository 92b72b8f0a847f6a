"""How RecTools' recommendations become our metric matrix: a user RecTools never saw act gets popularity."""

from __future__ import annotations

import pandas as pd

from bench.rectools_runner import with_popular_for_cold
from contract.events import load_events
from evaluation.splits import temporal_split

DAY = 86_400


def test_users_rectools_cannot_score_get_the_popular_items_they_have_not_acted_on(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "timestamp": 1 * DAY, "item_id": "a", "action": "click"},
        {"user_id": 1, "timestamp": 9 * DAY, "item_id": "c", "action": "click"},
        {"user_id": 2, "timestamp": 2 * DAY, "item_id": "a", "action": "click"},
        {"user_id": 2, "timestamp": 2 * DAY + 60, "item_id": "b", "action": "click"},
        {"user_id": 2, "timestamp": 9 * DAY, "item_id": "c", "action": "click"},
        {"user_id": 3, "timestamp": 3 * DAY, "item_id": "a", "action": "show"},  # never acted before the split
        {"user_id": 3, "timestamp": 9 * DAY, "item_id": "b", "action": "click"},
        {"user_id": 3, "timestamp": 9 * DAY + 60, "item_id": "d", "action": "show"},
    ]))
    split = temporal_split(log, split_time=5 * DAY, include_cold_users=True)
    code = log.vocabs.items.code_of
    user = log.vocabs.users.code_of
    # RecTools' table in no particular order; user 2 has more than k recommendations, user 1 fewer
    rectools_recs = pd.DataFrame({"user_id": [user(2), user(1), user(2), user(2), user(2), user(1)],
                                  "item_id": [code("a"), code("b"), code("c"), code("b"), code("d"), code("c")],
                                  "rank": [4, 2, 1, 3, 2, 1]})

    recommended = with_popular_for_cold(rectools_recs, split, k=3)

    rows = {int(case_user): list(row) for case_user, row in zip(split.cases.user, recommended, strict=True)}
    assert rows[user(1)] == [code("c"), code("b"), 0]  # RecTools' own list, padded
    assert rows[user(2)] == [code("c"), code("d"), code("b")]  # its top k by rank
    assert rows[user(3)] == [code("a"), code("b"), code("c")]  # popularity: a (2 clicks), b (1), c (0)
