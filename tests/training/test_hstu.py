"""The session mask and session-wise RoPE: what TBGRecall's attention may see, and what it is invariant to."""

from __future__ import annotations

import torch

from contract.tokens import CONTEXT_TOKEN as C
from contract.tokens import ITEM_TOKEN as I
from contract.tokens import PAD as P
from training.config import ModelConfig
from training.hstu import apply_rope, rope_angles, session_mask
from training.model import RecallModel

SIZES = {"items": 30, "contexts": 5, "scenarios": 3, "categories": 4, "sellers": 4, "users": 3}


def test_session_mask_on_three_sessions():
    # positions: 0 pad | 1 c1 | 2 a | 3 b | 4 c2 | 5 d | 6 c3
    token_type = torch.tensor([[P, C, I, I, C, I, C]])
    session = torch.tensor([[0, 0, 0, 0, 1, 1, 2]])
    mask = session_mask(token_type, session)[0].bool()
    sees = {i: set(torch.nonzero(mask[i]).flatten().tolist()) for i in range(7)}
    assert sees[0] == set()  # padding sees nothing
    assert sees[1] == {1}  # c1: itself only (no earlier session)
    assert sees[2] == {1, 2} and sees[3] == {1, 3}  # items of session 1: their context and themselves, not each other
    assert sees[4] == {1, 2, 3, 4}  # c2: all of session 1 and itself
    assert sees[5] == {1, 2, 3, 4, 5}  # d: session 1, its context c2, itself
    assert sees[6] == {1, 2, 3, 4, 5, 6}  # c3 (the query): everything before it
    assert not mask[:, 0].any()  # nobody sees padding


def test_rope_scores_depend_only_on_session_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    positions = torch.tensor([[0, 0, 1, 1, 2]])

    def scores(pos: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_angles(pos, 8)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    assert torch.allclose(scores(positions), scores(positions + 7), atol=1e-4)
    assert not torch.allclose(scores(positions), scores(positions * 2), atol=1e-3)


def features(items: list[int], token_type: list[int], session: list[int]) -> dict[str, torch.Tensor]:
    n = len(items)
    zeros = torch.zeros(1, n, dtype=torch.long)
    return {"token_type": torch.tensor([token_type]), "item": torch.tensor([items]),
            "action": torch.tensor([[2 if t == I else 0 for t in token_type]]),
            "context": torch.tensor([[1 if t == C else 0 for t in token_type]]), "scenario": zeros + 1,
            "hour": zeros + 3, "weekday": zeros + 2, "gap": zeros + 1, "session_pos": torch.tensor([session])}


def tbgrecall() -> RecallModel:
    torch.manual_seed(0)
    return RecallModel(ModelConfig(dim=16, n_heads=2, n_layers=2, max_len=16), SIZES).eval()


def test_encoder_is_invariant_to_shifting_all_session_indices():
    model = tbgrecall()
    base = features([0, 5, 6, 0, 7, 0], [C, I, I, C, I, C], [0, 0, 0, 1, 1, 2])
    shifted = {**base, "session_pos": base["session_pos"] + 5}
    with torch.no_grad():
        assert torch.allclose(model.encoder.encode(base), model.encoder.encode(shifted), atol=1e-5)


def test_permuting_items_inside_a_session_leaves_context_outputs_unchanged():
    model = tbgrecall()
    order = features([0, 5, 6, 9, 0, 7, 8, 0], [C, I, I, I, C, I, I, C], [0, 0, 0, 0, 1, 1, 1, 2])
    permuted = features([0, 9, 5, 6, 0, 8, 7, 0], [C, I, I, I, C, I, I, C], [0, 0, 0, 0, 1, 1, 1, 2])
    with torch.no_grad():
        a, b = model.encoder.encode(order), model.encoder.encode(permuted)
    context_positions = [0, 4, 7]
    assert torch.allclose(a[0, context_positions], b[0, context_positions], atol=1e-5)
    assert torch.allclose(model(order), model(permuted), atol=1e-5)


def test_the_query_context_changes_the_user_vector():
    model = tbgrecall()
    history = features([0, 5, 6, 0], [C, I, I, C], [0, 0, 0, 1])
    other = {**history, "context": history["context"].clone()}
    other["context"][0, -1] = 3
    with torch.no_grad():
        assert not torch.allclose(model(history), model(other), atol=1e-4)


def test_user_vectors_are_unit_length_for_every_encoder():
    batch = features([0, 5, 6, 0, 7, 0], [C, I, I, C, I, C], [0, 0, 0, 1, 1, 2])
    for encoder in ("tbgrecall", "sasrec", "bert4rec"):
        model = RecallModel(ModelConfig(encoder=encoder, dim=16, n_heads=2, max_len=16), SIZES).eval()
        with torch.no_grad():
            vectors = model(batch)
        assert vectors.shape == (1, 16)
        assert torch.allclose(vectors.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_items_layout_pairs_each_event_with_the_next_and_a_batch_of_single_clicks_has_none():
    model = RecallModel(ModelConfig(dim=16, n_heads=2, max_len=16, layout="items", n_future_sessions=2), SIZES)
    walk = features([0, 5, 6, 7], [P, I, I, I], [0, 0, 1, 2])
    pairs = model.encoder.training_pairs(walk, future_weight=0.5)
    assert pairs.positive.tolist() == [6, 7, 7]  # 5->6, 6->7 (next), 5->7 (second next, weight 0.5)
    assert pairs.weight.tolist() == [1.0, 1.0, 0.5]
    one_click_users = {name: values[:, -1:] for name, values in walk.items()}
    assert len(model.encoder.training_pairs(one_click_users, future_weight=0.5)) == 0
