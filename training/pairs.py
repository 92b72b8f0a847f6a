"""What a training batch asks the encoder to predict: (query vector, positive item) pairs and their labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Pairs:
    query: torch.Tensor  # (P, d) unit user vectors, one per prediction
    positive: torch.Tensor  # (P,) item codes to retrieve
    action: torch.Tensor  # (P,) action code of the positive (0 show .. 3 pay)
    scenario: torch.Tensor  # (P,) scenario of the target session: losses average within each
    weight: torch.Tensor  # (P,) 1 for the next session, LossConfig.future_weight for later ones
    # (P,) id of the target session within the batch: click/pay compare inside it, and its other positives are
    # not negatives (LossConfig.mask_session_positives). One event where there are no sessions (items layout).
    group: torch.Tensor
    # Task-head queries (P0, d) for the first P0 pairs, the next-session ones (TBGRecall only).
    click_query: torch.Tensor | None = None
    pay_query: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.positive)


def concat(parts: list[Pairs]) -> Pairs:
    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else torch.cat(values)

    return Pairs(**{name: cat(name) for name in Pairs.__dataclass_fields__})
