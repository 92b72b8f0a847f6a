"""The item tower: item id + category + seller embeddings -> MLP -> L2-normalised retrieval vector.

The same tower embeds item tokens for the encoders and builds the ANN index, so both live in one space.
Side information is kept as buffers indexed by item code, so the exported graph takes item codes only.

Content (ModelConfig.item_attributes / item_text / semantic_id_levels, issue 25) places the items no one has acted
on yet (`item_seen` 0): a content head, with its own category and seller tables, a mean bag of attribute
embeddings, the frozen sentence encoder's text vector through a linear map and one learned embedding per
semantic-id code, summed and passed through its own MLP. It is fitted after training to put each known item, from
its content alone, where the id path does (training/content_fit.py). Content does not enter the id path: summed in
beside the id it cost the known items 2-22% of their Recall@50 in every tower measured (BENCHMARKS.md, "New
items"), and kept out, a model with content trains exactly as the same model without (a test checks this).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.text_encoder import TEXT_DIM

CONTENT_HEAD_STREAM = 2_000_003  # an offset from the run seed


@contextmanager
def own_random_stream(stream: int):
    """Draw initial weights from a random stream of their own: a tower with content then starts every other
    weight (id tables, MLP, encoder) where the same model without content does, so comparing the two compares
    content, not initialisations (on the synthetic world a different start alone moved results by 10%)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch.initial_seed() + stream)
        yield


def add_part_embeddings(module: nn.Module, config: ModelConfig, sizes: dict[str, int], content: bool,
                        hidden: int | None = None) -> list[nn.Embedding]:
    """Give `module` the tables an item's parts are embedded with (category and seller, plus, with `content`, the
    content the config asks for, initialised here) and the MLP over their sum (`hidden` wide; default the
    dimension); returns the category and seller tables, for initialisation."""
    dim = config.dim
    module.category_embedding = nn.Embedding(sizes["categories"], dim, padding_idx=0)
    module.seller_embedding = nn.Embedding(sizes["sellers"], dim, padding_idx=0)
    if content:
        if config.item_attributes:
            module.attribute_embedding = nn.Embedding(sizes["attributes"], dim, padding_idx=0)
            _init_with_zero_padding(module.attribute_embedding)
        if config.item_text:
            module.text_projection = nn.Linear(TEXT_DIM, dim, bias=False)
        if config.semantic_id_levels:
            # Code c of level l is row 1 + l * K + c; row 0 is "no code" (an item without text).
            module.semantic_embedding = nn.Embedding(1 + config.semantic_id_levels * sizes["semantic_codes"], dim,
                                                     padding_idx=0)
            _init_with_zero_padding(module.semantic_embedding)
    hidden = hidden or dim
    module.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
    return [module.category_embedding, module.seller_embedding]


def _init_with_zero_padding(embedding: nn.Embedding) -> None:
    """Row 0 pads a bag (an item's unused attribute slots, no semantic code): it must add nothing. A random row 0
    added a fixed vector per empty slot to every item, the same for all of them, which pulled the catalogue
    together at the start (and never trains: padding gets no gradient)."""
    nn.init.normal_(embedding.weight, std=0.05)
    with torch.no_grad():
        embedding.weight[0].zero_()


def init_part_embeddings(module: nn.Module, embeddings: list[nn.Embedding]) -> None:
    for embedding in embeddings:
        nn.init.normal_(embedding.weight, std=0.05)
    # With default biases the small embeddings barely move the MLP's output: every item started at nearly
    # the same vector (mean cosine 0.99), and training spent its first epochs pulling them apart.
    for layer in (module.mlp[0], module.mlp[2]):
        nn.init.zeros_(layer.bias)


def combine(module: nn.Module, summed: torch.Tensor | float, category: torch.Tensor, seller: torch.Tensor,
            attributes: torch.Tensor | None, text: torch.Tensor | None, semantic: torch.Tensor | None) -> torch.Tensor:
    """(..., d) unit vectors from an item's parts, each (...) or (..., n) by item (None: not in this tower),
    embedded by `module`'s tables and added to `summed` (the id vectors, or 0)."""
    summed = summed + module.category_embedding(category) + module.seller_embedding(seller)
    if attributes is not None:
        count = (attributes > 0).sum(-1, keepdim=True).clamp(min=1)
        summed = summed + module.attribute_embedding(attributes).sum(-2) / count
    if text is not None:
        summed = summed + module.text_projection(text)
    if semantic is not None:
        summed = summed + module.semantic_embedding(semantic).sum(-2)
    return F.normalize(module.mlp(summed), dim=-1)


class ContentHead(nn.Module):
    """An item's vector from its content alone: its own part tables and MLP, trained only by
    training/content_fit.py. Kept apart from the full tower so that learning to stand in for the id never moves
    the vectors of the items the model knows. Its MLP is four times as wide as the tower's: it must rebuild from
    content what the id adds, and at the tower's width a twin of a user's favourite item (the same title,
    category and seller) fell from the top 50 for a third of the small world's users (none at 4x)."""

    def __init__(self, config: ModelConfig, sizes: dict[str, int]):
        super().__init__()
        with own_random_stream(CONTENT_HEAD_STREAM):
            init_part_embeddings(self, add_part_embeddings(self, config, sizes, content=True, hidden=4 * config.dim))


class ItemTower(nn.Module):
    def __init__(self, config: ModelConfig, sizes: dict[str, int]):
        super().__init__()
        dim, n_items = config.dim, sizes["items"]
        self.config = config
        self.item_embedding = nn.Embedding(n_items, dim, padding_idx=0)
        self.register_buffer("item_category", torch.zeros(n_items, dtype=torch.long))
        self.register_buffer("item_seller", torch.zeros(n_items, dtype=torch.long))
        embeddings = [self.item_embedding, *add_part_embeddings(self, config, sizes, content=False)]
        if config.item_content:
            self.register_buffer("item_seen", torch.ones(n_items))  # 1: the id embedding has trained
            # 1 once content_fit.py has fitted the head; until then an item without events is served as the same
            # model without content serves it (its id path), so validation while training is that model's too.
            self.register_buffer("content_head_fitted", torch.zeros(()))
        if config.item_attributes:
            self.register_buffer("item_attributes", torch.zeros(n_items, sizes["max_attributes"], dtype=torch.long))
        if config.item_text:
            self.register_buffer("item_text", torch.zeros(n_items, TEXT_DIM, dtype=torch.float16))  # unit vectors
        if config.semantic_id_levels:
            self.register_buffer("item_semantic", torch.zeros(n_items, config.semantic_id_levels, dtype=torch.long))
            self.register_buffer("semantic_centroids",
                                 torch.zeros(config.semantic_id_levels, sizes["semantic_codes"], TEXT_DIM))
        init_part_embeddings(self, embeddings)
        if config.item_content:
            self.content_head = ContentHead(config, sizes)  # draws from its own stream: the main one is untouched

    def set_side_info(self, side_info: dict[str, torch.Tensor]) -> None:
        """Copy in the buffers named in `side_info` (item_category, item_seller, item_seen, item_attributes,
        item_text, item_semantic by item code; semantic_centroids)."""
        for name, values in side_info.items():
            getattr(self, name).copy_(values)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item codes -> (..., dim) unit vectors."""
        if self.training:
            # A batch repeats the same items many times (tokens, positives, negatives): embed each once.
            unique, inverse = torch.unique(items, return_inverse=True)
            return self.embed(unique)[inverse]
        return self.embed(items)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        full = combine(self, self.item_embedding(items), self.item_category[items], self.item_seller[items],
                       None, None, None)
        if not self.config.item_content or self.training:
            return full  # training: the id path only; the content head is fitted after it (content_fit.py)
        by_id = (self.item_seen[items, None] > 0) | (self.content_head_fitted == 0)
        return torch.where(by_id, full, self.content_vectors(items))

    def parts(self, items: torch.Tensor) -> tuple:
        """The side information of (...) item codes, in combine's order."""
        return (self.item_category[items], self.item_seller[items],
                self.item_attributes[items] if self.config.item_attributes else None,
                self.item_text[items].float() if self.config.item_text else None,
                self.item_semantic[items] if self.config.semantic_id_levels else None)

    def embed_content(self, category: torch.Tensor, seller: torch.Tensor, attributes: torch.Tensor,
                      text: torch.Tensor) -> torch.Tensor:
        """(B, d) unit vectors of items the model has no id for, from their content alone: (B,) category and
        seller codes, (B, A) attribute codes (0 pads), (B, 384) sentence-encoder vectors (zeros: no text). What
        the service embeds an item added live with (content_tower.onnx)."""
        text = text.half().float()  # rounded as the tower's own text buffer is, so both paths agree
        return combine(self.content_head, 0.0, category, seller,
                       attributes if self.config.item_attributes else None,
                       text if self.config.item_text else None,
                       self.semantic_codes(text) if self.config.semantic_id_levels else None)

    def content_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item codes -> (..., d) the content head's unit vectors: each item as if no one had acted on it."""
        return combine(self.content_head, 0.0, *self.parts(items))

    def semantic_codes(self, text: torch.Tensor) -> torch.Tensor:
        """(B, 384) text vectors -> (B, levels) rows of the semantic embedding: the nearest centroid at each
        level of the residual k-means the codes were fitted with (training/semantic_ids.py); 0 without text."""
        residual, rows = text, []
        n_codes = self.semantic_centroids.shape[1]
        for level, centroids in enumerate(self.semantic_centroids):  # (K, 384)
            distances = (centroids * centroids).sum(-1) - 2 * residual @ centroids.T  # (B, K), up to |r|^2
            nearest = distances.argmin(-1)
            rows.append(1 + level * n_codes + nearest)
            residual = residual - centroids[nearest]
        has_text = (text != 0).any(-1, keepdim=True)
        return torch.stack(rows, -1) * has_text

    @property
    def n_items(self) -> int:
        return self.item_embedding.num_embeddings
