"""The trainable model: the item tower plus one user encoder (TBGRecall, SASRec or BERT4Rec) on top of it."""

from __future__ import annotations

import torch
from torch import nn

from training.bert4rec import BERT4RecEncoder
from training.config import ModelConfig
from training.item_tower import ItemTower
from training.sasrec import SASRecEncoder
from training.tbgrecall import TBGRecallEncoder

ENCODER_CLASSES = {"tbgrecall": TBGRecallEncoder, "sasrec": SASRecEncoder, "bert4rec": BERT4RecEncoder}


class RecallModel(nn.Module):
    def __init__(self, config: ModelConfig, sizes: dict[str, int]):
        super().__init__()
        self.config = config
        self.sizes = dict(sizes)
        self.item_tower = ItemTower(config, sizes)
        self.encoder = ENCODER_CLASSES[config.encoder](config, sizes, self.item_tower)
        self.task_bias = nn.Parameter(torch.zeros(2))  # L_click, L_pay logit offsets
        self.content_stats: dict = {}  # what the item content held at training (text coverage, semantic ids)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T) int64 features -> (B, d) unit user vectors at the query token."""
        return self.encoder(features)

    @torch.no_grad()
    def item_vectors(self, batch_size: int = 65_536) -> torch.Tensor:
        """(n_items, d) unit vectors of the whole catalogue (row 0 is padding)."""
        device = self.task_bias.device
        return torch.cat([self.item_tower(torch.arange(start, min(start + batch_size, self.item_tower.n_items),
                                                       device=device))
                          for start in range(0, self.item_tower.n_items, batch_size)])


def grow_state(old_state: dict[str, torch.Tensor], model: RecallModel) -> list[str]:
    """Load `old_state` into a model whose vocabularies grew: tables keep their old rows, new rows keep their
    fresh initialisation. Returns the names of the tables that grew."""
    new_state = model.state_dict()
    grown = []
    for name, old in old_state.items():
        new = new_state[name]
        if old.shape == new.shape:
            new.copy_(old)
        elif old.dim() >= 1 and old.shape[1:] == new.shape[1:] and old.shape[0] < new.shape[0]:
            new[: old.shape[0]].copy_(old)
            grown.append(name)
        else:
            raise ValueError(f"cannot warm-start {name}: shape {tuple(old.shape)} -> {tuple(new.shape)}")
    model.load_state_dict(new_state)
    return grown
