"""The TBGRecall user encoder: context tokens and session items through HSTU blocks with session-wise RoPE.

Sequence [c(1), items of session 1, ..., c(K), items of session K, c(K+1)]; the output at c(k), which sees only
earlier sessions and its own context, is the user vector that retrieves the items of session k (head 0) and of
sessions k+1.. (one head per offset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract.tokens import CONTEXT_TOKEN, ITEM_TOKEN, N_ACTIONS, N_GAPS, N_HOURS, N_WEEKDAYS
from training.config import ModelConfig
from training.hstu import HSTUBlock, causal_mask, distance_buckets, rope_angles, session_mask
from training.item_tower import ItemTower
from training.pairs import Pairs, concat


def tower(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))


def previous_session_mean(item: torch.Tensor, token_type: torch.Tensor, session_pos: torch.Tensor) -> torch.Tensor:
    """(B, T, d): at each context token, the mean item input of the session before it (zero elsewhere).

    The previous session is known before the session starts, so the context token may carry it; it gives the
    query a direct path to the most recent behaviour instead of one found through attention alone."""
    takes = ((session_pos[:, :, None] - 1 == session_pos[:, None, :])  # (B, T, T): query t, key t'
             & (token_type == ITEM_TOKEN)[:, None, :] & (token_type == CONTEXT_TOKEN)[:, :, None])
    weights = takes.float() / takes.sum(-1, keepdim=True).clamp(min=1)
    return weights @ item


class TBGRecallEncoder(nn.Module):
    def __init__(self, config: ModelConfig, sizes: dict[str, int], item_tower: ItemTower):
        super().__init__()
        d = config.dim
        self.config = config
        self.item_tower = item_tower
        self.context_embedding = nn.Embedding(sizes["contexts"], d)  # code 0: the default context
        self.scenario_embedding = nn.Embedding(sizes["scenarios"], d)
        self.action_embedding = nn.Embedding(N_ACTIONS, d)
        self.hour_embedding = nn.Embedding(N_HOURS, d)
        self.weekday_embedding = nn.Embedding(N_WEEKDAYS, d)
        self.gap_embedding = nn.Embedding(N_GAPS, d)
        self.position_embedding = nn.Embedding(config.max_len + 1, d) if config.positions == "learned" else None
        self.context_tower = tower(d)
        # Items layout: the item tower's output goes in as it is, as in SASRec; an input MLP on top of the item
        # tower's own cost 2-6% NDCG@10 there (YOOCHOOSE, MovieLens-100K; BENCHMARKS.md "Default training").
        if config.layout == "items":
            self.item_input_tower = nn.Identity()
        else:
            self.item_input_tower = tower(d) if config.type_towers else self.context_tower
        self.input_dropout = nn.Dropout(config.dropout)
        # Items layout: the query is read at an item token, so its (unit) item vector must stand out of the sum of
        # small embeddings and input dropout, as SASRec scales its inputs by sqrt(d). Unscaled, a toy ring of 30
        # items took 15 epochs to learn "next item" instead of 5.
        self.item_scale = d**0.5 if config.layout == "items" else 1.0
        self.blocks = nn.ModuleList(
            HSTUBlock(d, config.n_heads, config.max_len, config.dropout, typed=config.type_towers and i == 0,
                      gated_residual=config.gated_residual)
            for i in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d)
        # One head per future session. In the items layout the next event's head is the normed hidden state
        # itself, as in SASRec: a Linear there scored lower (same measurements as the input tower above).
        self.session_heads = nn.ModuleList(
            nn.Identity() if config.layout == "items" and offset == 0 else nn.Linear(d, d)
            for offset in range(config.n_future_sessions))
        self.click_head = nn.Linear(d, d)
        self.pay_head = nn.Linear(d, d)
        for embedding in (self.context_embedding, self.scenario_embedding, self.action_embedding,
                          self.hour_embedding, self.weekday_embedding, self.gap_embedding):
            nn.init.normal_(embedding.weight, std=0.05)

    def embed(self, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) features -> (B, T, d) token inputs (padding rows are zero), and (B, T, d) the previous session's
        mean item input at each context token (None when the model does not use it)."""
        token_type = f["token_type"]
        shared = self.shared_embedding(f)
        item = shared + self.item_tower(f["item"]) * self.item_scale + self.action_embedding(f["action"])
        previous = previous_session_mean(item, token_type, f["session_pos"]) if self.config.previous_session \
            else None
        is_context = (token_type == CONTEXT_TOKEN)[..., None]
        x = torch.where(is_context, self.context_input(f, shared, previous), self.item_input_tower(item))
        if self.position_embedding is not None:
            x = x + self.position_embedding(f["session_pos"].clamp(max=self.config.max_len))
        return self.input_dropout(x) * (token_type != 0)[..., None].float(), previous

    def shared_embedding(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """What context and item tokens both carry: scenario and time, of any shape of features."""
        return (self.scenario_embedding(f["scenario"]) + self.hour_embedding(f["hour"])
                + self.weekday_embedding(f["weekday"]) + self.gap_embedding(f["gap"]))

    def context_input(self, f: dict[str, torch.Tensor], shared: torch.Tensor,
                      previous: torch.Tensor | None) -> torch.Tensor:
        context = shared + (self.context_embedding(f["context"]) if self.config.use_context else 0.0)
        return self.context_tower(context + previous if previous is not None else context)

    def encode(self, f: dict[str, torch.Tensor], record: dict | None = None) -> torch.Tensor:
        """(B, T, d) final hidden states. `record`, when given, receives what the query step reads of a history
        (training/query_step.py): "previous" (B, T, d) or None, "buckets" (B, T, T), "keys_values" per block."""
        token_type = f["token_type"]
        if self.config.attention_mask == "session":
            mask = session_mask(token_type, f["session_pos"])
        else:
            mask = causal_mask(token_type)
        x, previous = self.embed(f)
        is_context, rope, buckets = token_type == CONTEXT_TOKEN, self.rope(f["session_pos"]), distance_buckets(
            f["session_pos"])
        keys_values = None
        if record is not None:
            keys_values = record["keys_values"] = []
            record["previous"], record["buckets"] = previous, buckets
        for block in self.blocks:
            x = block(x, mask, is_context, rope, buckets, keys_values)
        return self.final_norm(x)

    def rope(self, session_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.position_embedding is not None:
            return None
        return rope_angles(session_pos, self.config.dim // self.config.n_heads)

    def forward(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, d) unit user vectors read at the query (next) context token, the last one; in the items layout at
        the last item before it (no item sees the query token, so the request's token changes nothing there)."""
        hidden = self.encode(f)[:, -2 if self.config.layout == "items" else -1]
        return self.user_vector(hidden)

    def user_vector(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.session_heads[0](hidden), dim=-1)

    def training_pairs(self, f: dict[str, torch.Tensor], future_weight: float) -> Pairs:
        if self.config.layout == "items":
            return self.next_item_pairs(f, future_weight)
        return self.next_session_pairs(f, future_weight)

    def next_item_pairs(self, f: dict[str, torch.Tensor], future_weight: float) -> Pairs:
        """Items layout: the output at each item predicts the next item (head 0) and the j-th next (head j)."""
        hidden = self.encode(f)
        item = f["token_type"] == ITEM_TOKEN
        parts = []
        for offset, head in enumerate(self.session_heads):
            step = offset + 1  # (a batch of one-event histories has no pairs: empty slices, empty tensors)
            rows, cols = (item[:, :-step] & item[:, step:]).nonzero(as_tuple=True)
            parts.append(Pairs(
                query=F.normalize(head(hidden[rows, cols]), dim=-1), positive=f["item"][rows, cols + step],
                action=f["action"][rows, cols + step] - 1, scenario=f["scenario"][rows, cols + step],
                weight=torch.full((len(rows),), 1.0 if offset == 0 else future_weight, device=hidden.device),
                group=rows * item.shape[1] + cols + step))  # each target event is its own session
        return concat(parts)

    def next_session_pairs(self, f: dict[str, torch.Tensor], future_weight: float) -> Pairs:
        """Every item token is a positive for its session's context token (head 0) and, for j = 1..m-1, for the
        context token j sessions earlier (head j)."""
        hidden = self.encode(f)
        token_type, session_pos = f["token_type"], f["session_pos"]
        n_sessions = int(session_pos.max()) + 1
        context_at = torch.full((token_type.shape[0], n_sessions), -1, dtype=torch.long, device=hidden.device)
        ctx_row, ctx_col = (token_type == CONTEXT_TOKEN).nonzero(as_tuple=True)
        context_at[ctx_row, session_pos[ctx_row, ctx_col]] = ctx_col
        item_row, item_col = (token_type == ITEM_TOKEN).nonzero(as_tuple=True)
        item_session = session_pos[item_row, item_col]
        parts = []
        for offset, head in enumerate(self.session_heads):
            source = item_session - offset
            usable = source >= 0
            rows, cols, source = item_row[usable], item_col[usable], source[usable]
            query_col = context_at[rows, source]
            usable = query_col >= 0
            rows, cols, query_col = rows[usable], cols[usable], query_col[usable]
            query_hidden = hidden[rows, query_col]
            parts.append(Pairs(
                query=F.normalize(head(query_hidden), dim=-1), positive=f["item"][rows, cols],
                action=f["action"][rows, cols] - 1, scenario=f["scenario"][rows, cols],
                weight=torch.full((len(rows),), 1.0 if offset == 0 else future_weight, device=hidden.device),
                group=rows * n_sessions + session_pos[rows, cols],
                click_query=F.normalize(self.click_head(query_hidden), dim=-1) if offset == 0 else None,
                pay_query=F.normalize(self.pay_head(query_hidden), dim=-1) if offset == 0 else None,
            ))
        head_pairs = concat(parts[1:]) if len(parts) > 1 else None
        first = parts[0]
        if head_pairs is None:
            return first
        merged = concat([Pairs(**{**first.__dict__, "click_query": None, "pay_query": None}), head_pairs])
        merged.click_query, merged.pay_query = first.click_query, first.pay_query  # rows [:len(first)]
        return merged
