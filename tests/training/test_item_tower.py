"""The item tower gives items distinct directions from the start, so retrieval training does not begin by pulling
a collapsed catalogue apart."""

from __future__ import annotations

import numpy as np
import torch

from contract.events import ItemTable
from training.config import ModelConfig
from training.item_content import item_content
from training.item_tower import ItemTower


def test_fresh_item_vectors_are_unit_length_and_point_apart():
    torch.manual_seed(0)
    tower = ItemTower(ModelConfig(dim=64), {"items": 200, "categories": 5, "sellers": 2}).eval()
    vectors = tower(torch.arange(1, 200))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(199), atol=1e-5)
    cosines = vectors @ vectors.T
    mean_off_diagonal = (cosines.sum() - cosines.diagonal().sum()) / (199 * 198)
    assert mean_off_diagonal < 0.9  # default MLP biases made it 0.99: every item nearly the same vector


def content_tower(counts: np.ndarray, titles: list[str]) -> ItemTower:
    """A tower over len(titles) items (code 0 is padding) with text and semantic ids, its side info filled in."""
    n_items = len(titles)
    items = ItemTable(category=np.zeros(n_items, dtype=np.int32), seller=np.zeros(n_items, dtype=np.int32),
                      title=np.array(titles, dtype=object))
    config = ModelConfig(dim=16, item_text=True, semantic_id_levels=2)
    content = item_content(items, n_items, counts, config)
    tower = ItemTower(config, {"items": n_items, "categories": 1, "sellers": 1, **content.sizes})
    tower.set_side_info(content.side_info)
    tower.content_head_fitted.fill_(1)  # as after training: items without events are served by the head
    return tower.eval()


def test_a_new_item_is_known_by_its_content_alone():
    torch.manual_seed(0)
    titles = ["", "red running shoes", "red running shoes", "steel saucepan", "blue denim jacket"] * 4
    counts = np.array([0, 5, 0, 3, 0] * 4)  # codes 2 and 4 (and their repeats) never acted on in training
    tower = content_tower(counts, titles)
    before = tower(torch.arange(len(titles)))
    with torch.no_grad():
        tower.item_embedding.weight.add_(torch.randn_like(tower.item_embedding.weight))
    after = tower(torch.arange(len(titles)))
    new, known = torch.from_numpy(counts == 0), torch.from_numpy(counts > 0)
    new[0] = False  # padding
    assert torch.allclose(before[new], after[new])  # an untrained id embedding does not move a new item
    assert not torch.allclose(before[known], after[known])  # a known item keeps its id
    # new items with the same text (and side info) share one vector; a different text gives another
    assert torch.allclose(after[2], after[7]) and not torch.allclose(after[2], after[4])


def test_an_item_embedded_from_its_content_alone_equals_the_same_item_in_the_catalogue():
    # What the service does with an item added live (content_tower.onnx) gives the vector training would have.
    torch.manual_seed(0)
    titles = ["", "red running shoes", "steel saucepan", "blue denim jacket", "wooden chair", "red shoes"] * 5
    counts = np.array([0, 5, 0, 3, 0, 0] * 5)
    tower = content_tower(counts, titles)
    new = torch.from_numpy(np.flatnonzero(counts == 0)[1:])
    with torch.no_grad():
        from_content = tower.embed_content(tower.item_category[new], tower.item_seller[new],
                                           torch.zeros(len(new), 1, dtype=torch.long), tower.item_text[new].float())
    assert torch.allclose(from_content, tower(new), atol=1e-6)
    assert torch.equal(tower.semantic_codes(tower.item_text[new].float()), tower.item_semantic[new])


def test_fitting_the_content_head_places_items_it_never_saw_and_never_moves_a_known_item():
    # The model puts items by what they are (here: the noun in the title, through the id vectors). Fitted on the
    # known items, the head places new ones, which it never saw, where the model would have put them.
    from training.content_fit import fit_content_head

    torch.manual_seed(0)
    colours = ["red", "blue", "green", "black", "white", "grey", "brown", "pink", "yellow", "orange"]
    nouns = ["shoes", "saucepan", "jacket", "chair", "lamp", "teapot", "backpack", "pillow"]
    titles = [""] + [f"{colour} {noun}" for colour in colours for noun in nouns]
    tower = content_tower(np.array([0] + [1] * (len(titles) - 1)), titles)
    with torch.no_grad():
        tower.item_embedding.weight[1:] = torch.randn(len(nouns), 16).repeat(len(colours), 1) * 3
        where_the_model_puts = tower(torch.arange(len(titles)))
    new = torch.arange(len(titles) - len(nouns), len(titles))  # the orange ones: no events
    tower.item_seen[new] = 0
    known = torch.arange(1, len(titles) - len(nouns))
    before = {name: value.clone() for name, value in tower.state_dict().items() if not name.startswith("content_head.")}

    def mean_cosine(items: torch.Tensor) -> float:
        with torch.no_grad():
            return float((tower.content_vectors(items) * where_the_model_puts[items]).sum(-1).mean())

    unfitted = mean_cosine(new)
    fit = fit_content_head(tower, seed=0, steps=300, show_progress=False)
    assert fit["known_items"] == len(known) and fit["cosine"] > 0.99
    assert mean_cosine(new) > max(unfitted + 0.3, 0.8)  # by their kind
    with torch.no_grad():
        assert torch.allclose(tower(new), tower.content_vectors(new))  # what a new item is served with
    assert all(torch.equal(value, tower.state_dict()[name]) for name, value in before.items())
    assert not tower.training  # left as it was found


def test_content_leaves_the_rest_of_the_model_where_it_would_start_without():
    # An ablation must compare content, not initialisations: the id tables, the MLP, the encoder and the random
    # stream training goes on with (dropout) are all the same.
    from training.model import RecallModel

    sizes = {"items": 50, "categories": 4, "sellers": 2, "contexts": 3, "scenarios": 2, "attributes": 6,
             "max_attributes": 2}
    states, streams = [], []
    for content in (False, True):
        torch.manual_seed(0)
        states.append(RecallModel(ModelConfig(dim=16, n_heads=2, item_attributes=content), sizes).state_dict())
        streams.append(torch.get_rng_state())
    bare, with_content = states
    assert all(torch.equal(value, with_content[name]) for name, value in bare.items())
    assert any(name.startswith("item_tower.content_head.") for name in with_content)
    assert torch.equal(*streams)
