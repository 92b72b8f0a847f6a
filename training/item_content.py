"""What the item tower's buffers hold for a log: side information by item code, content included (issue 25)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from contract.events import ItemTable
from training.config import ModelConfig
from training.semantic_ids import assign_semantic_ids, fit_semantic_ids
from training.text_encoder import embed_texts

logger = logging.getLogger(__name__)


@dataclass
class ItemContent:
    side_info: dict[str, torch.Tensor]  # ItemTower buffer name -> values by item code
    sizes: dict[str, int]  # what the tower's tables need beyond the vocabularies
    stats: dict = field(default_factory=dict)  # for the run's metrics: text coverage, semantic-id collisions


def item_content(items: ItemTable, n_items: int, item_counts: np.ndarray, config: ModelConfig,
                 seed: int = 0, semantic_centroids: np.ndarray | None = None) -> ItemContent:
    """The tower's buffers for `n_items` codes. `item_counts`: training events per item code (an item with none
    is new to the model: its id embedding is left out). `semantic_centroids`: a warm start's codebook, kept
    instead of fitting one."""
    side_info = {"item_category": _padded(items.category, n_items), "item_seller": _padded(items.seller, n_items)}
    sizes: dict[str, int] = {}
    stats: dict = {}
    if config.item_content:
        seen = np.pad(np.asarray(item_counts), (0, n_items - len(item_counts))) > 0
        side_info["item_seen"] = torch.from_numpy(seen.astype(np.float32))
        stats["items_without_events"] = int((~seen[1:]).sum())
    if config.item_attributes:
        attributes = np.zeros((n_items, max(items.attributes.shape[1], 1)), dtype=np.int64)
        attributes[: len(items.attributes), : items.attributes.shape[1]] = items.attributes
        side_info["item_attributes"] = torch.from_numpy(attributes)
        sizes["max_attributes"] = attributes.shape[1]
        stats["items_with_attributes"] = int((attributes[1:] > 0).any(1).sum())
    if config.item_text or config.semantic_id_levels:
        texts = items.texts + [""] * (n_items - len(items.texts))
        vectors = embed_texts(texts)  # (n_items, 384), zeros where an item has no text
        has_text = np.array([bool(text) for text in texts])
        stats["items_with_text"] = int(has_text[1:].sum())
        if config.item_text:
            side_info["item_text"] = torch.from_numpy(vectors).half()
        if config.semantic_id_levels:
            semantic = _semantic_codes(vectors, has_text, config.semantic_id_levels, seed, semantic_centroids)
            side_info["item_semantic"], side_info["semantic_centroids"], stats["semantic_ids"] = semantic
            sizes["semantic_codes"] = side_info["semantic_centroids"].shape[1]
    return ItemContent(side_info=side_info, sizes=sizes, stats=stats)


def _semantic_codes(vectors: np.ndarray, has_text: np.ndarray, levels: int, seed: int,
                    centroids: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(n_items, levels) rows of the tower's semantic embedding (0: no code, for items without text), the
    (levels, K, 384) centroids, and the collision report."""
    codes = np.zeros((len(vectors), levels), dtype=np.int64)
    if centroids is None and has_text.sum() < 2:
        return torch.from_numpy(codes), torch.zeros(levels, 1, vectors.shape[1]), {"items": int(has_text.sum())}
    # fitted on the vectors as the tower stores them (float16), so a new item's codes come out the same way
    stored = vectors[has_text].astype(np.float16).astype(np.float32)
    semantic = fit_semantic_ids(stored, levels, seed=seed) if centroids is None \
        else assign_semantic_ids(stored, centroids)
    n_codes = semantic.centroids.shape[1]
    codes[has_text] = 1 + np.arange(levels) * n_codes + semantic.codes
    stats = semantic.stats()
    logger.info("semantic ids: %s", stats)
    return torch.from_numpy(codes), torch.from_numpy(semantic.centroids), stats


def _padded(values: np.ndarray, length: int) -> torch.Tensor:
    return torch.from_numpy(np.pad(np.asarray(values), (0, length - len(values))).astype(np.int64))
