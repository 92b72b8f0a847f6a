"""What one stage promises the next, as typed models: the feature schema an exported model writes and the
near-line worker obeys. One definition, written by model_export and checked by the service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from contract.tokens import CONTEXT_TOKEN, ITEM_TOKEN, N_ACTIONS, N_GAPS, N_HOURS, N_WEEKDAYS, PAD, TOKEN_FEATURES

# Model files an export writes only for some models, and a version then copies (index_builder/versions.py).
QUERY_STEP_FILE = "query_step.onnx"  # TBGRecall's session layout
CONTENT_TOWER_FILE = "content_tower.onnx"  # models with item content (issue 25): content -> vector
TEXT_FILES = ("text_encoder.onnx", "tokenizer.json")  # when the item tower reads text


class TokenVocab(BaseModel):
    n_hours: int = N_HOURS
    n_weekdays: int = N_WEEKDAYS
    n_gaps: int = N_GAPS
    n_actions: int = N_ACTIONS


class FeatureSchema(BaseModel):
    """How events become encoder inputs: what the near-line worker must reproduce token for token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_features: list[str] = list(TOKEN_FEATURES)
    dtype: Literal["int64"] = "int64"
    layout: Literal["left-padded, query token last"] = "left-padded, query token last"
    token_types: dict[str, int] = {"pad": PAD, "context": CONTEXT_TOKEN, "item": ITEM_TOKEN}
    action_offset: int = 1
    vocab: TokenVocab = TokenVocab()
    with_context_tokens: bool  # TBGRecall's session layout; False: only the acted items
    event_sessions: bool = False  # the items layout: every event is its own session, whatever its session id
    # The user vector depends on the history alone (items layout, SASRec, BERT4Rec): one precomputed vector
    # serves every context. False (TBGRecall's session layout, and manifests written before this field) reads the
    # request's context token.
    context_free: bool = False
    max_len: int
    max_items_per_session: int
    session_gap_s: int
    has_timestamp: bool

    def mismatch(self) -> str | None:
        """What this schema's writer encoded differently from this code's tokens, or None when they agree: a
        model exported by another version of the token code must not be fed tokens it never saw."""
        expected = FeatureSchema(with_context_tokens=self.with_context_tokens, max_len=self.max_len,
                                 max_items_per_session=self.max_items_per_session,
                                 session_gap_s=self.session_gap_s, has_timestamp=self.has_timestamp)
        for name in ("token_features", "token_types", "action_offset", "vocab"):
            if getattr(self, name) != getattr(expected, name):
                return f"feature_schema.{name} is {getattr(self, name)}, this service encodes " \
                       f"{getattr(expected, name)}"
        return None
