"""The frozen sentence encoder that makes items known by their text before anyone acts on them (seed 004).

all-MiniLM-L6-v2 written out in plain PyTorch: a 6-layer BERT (d=384, 12 heads) whose token states are averaged
over the text's word pieces and L2-normalised, as sentence-transformers does for this model. The weights come from
the packaged model (contract/item_text.py); nothing is downloaded. Training embeds each distinct text once and
caches it by text hash; the export writes this module as text_encoder.onnx for the service.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from contract.item_text import TEXT_DIM, TextTokenizer, read_model_file, text_hash

SAFETENSORS_DTYPES = {"F32": np.float32, "I64": np.int64}


class BertLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden: int):
        super().__init__()
        self.n_heads = n_heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attention_out = nn.Linear(dim, dim)
        self.attention_norm = nn.LayerNorm(dim, eps=1e-12)
        self.intermediate = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)
        self.out_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, pad_bias: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        heads = [proj(x).view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)
                 for proj in (self.query, self.key, self.value)]  # 3 x (B, H, L, D/H)
        attended = F.scaled_dot_product_attention(*heads, attn_mask=pad_bias)  # (B, H, L, D/H)
        x = self.attention_norm(x + self.attention_out(attended.transpose(1, 2).reshape(B, L, D)))
        return self.out_norm(x + self.out(F.gelu(self.intermediate(x))))


class MiniLM(nn.Module):
    """(B, L) word-piece ids and mask -> (B, 384) unit sentence vectors."""

    def __init__(self, vocab: int = 30522, dim: int = TEXT_DIM, n_layers: int = 6, n_heads: int = 12,
                 hidden: int = 1536, max_positions: int = 512):
        super().__init__()
        self.word_embedding = nn.Embedding(vocab, dim)
        self.position_embedding = nn.Embedding(max_positions, dim)
        self.type_embedding = nn.Embedding(2, dim)  # one segment: row 0 only
        self.embedding_norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(dim, n_heads, hidden) for _ in range(n_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embedding(ids) + self.position_embedding(positions) + self.type_embedding.weight[0]
        x = self.embedding_norm(x)
        keep = mask.to(x.dtype)  # (B, L) 1 for a word piece, 0 for padding
        pad_bias = ((1.0 - keep) * torch.finfo(x.dtype).min)[:, None, None, :]  # (B, 1, 1, L): no key is padding
        for layer in self.layers:
            x = layer(x, pad_bias)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


# Our parameter names -> the BERT checkpoint's ("{i}" is the layer).
CHECKPOINT_NAMES = {
    "word_embedding.weight": "embeddings.word_embeddings.weight",
    "position_embedding.weight": "embeddings.position_embeddings.weight",
    "type_embedding.weight": "embeddings.token_type_embeddings.weight",
    "embedding_norm.weight": "embeddings.LayerNorm.weight", "embedding_norm.bias": "embeddings.LayerNorm.bias",
    **{f"layers.{{i}}.{ours}.{kind}": f"encoder.layer.{{i}}.{theirs}.{kind}" for ours, theirs in (
        ("query", "attention.self.query"), ("key", "attention.self.key"), ("value", "attention.self.value"),
        ("attention_out", "attention.output.dense"), ("attention_norm", "attention.output.LayerNorm"),
        ("intermediate", "intermediate.dense"), ("out", "output.dense"), ("out_norm", "output.LayerNorm"))
       for kind in ("weight", "bias")},
}


def read_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file: an 8-byte header length, a JSON header of dtypes, shapes and byte
    offsets, then the raw little-endian data. (A dozen lines, so the `safetensors` package is not needed.)"""
    (header_length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8: 8 + header_length])
    data = memoryview(blob)[8 + header_length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=SAFETENSORS_DTYPES[entry["dtype"]]).reshape(
            entry["shape"])
    return tensors


def load_minilm() -> MiniLM:
    """The packaged all-MiniLM-L6-v2, in eval mode."""
    checkpoint = read_safetensors(read_model_file("model.safetensors"))
    # The checkpoint overwrites the random init, which must not draw from the global generator: a training run
    # that embeds its item texts would otherwise differ with the state of the embedding cache.
    with torch.random.fork_rng(devices=[]):
        model = MiniLM()
    n_layers = len(model.layers)
    names = {ours.format(i=i): theirs.format(i=i) for ours, theirs in CHECKPOINT_NAMES.items()
             for i in (range(n_layers) if "{i}" in ours else [0])}
    model.load_state_dict({ours: torch.from_numpy(checkpoint[theirs].copy()) for ours, theirs in names.items()})
    return model.eval()


def default_cache_path() -> Path:
    """Where text embeddings are kept between runs ($XDG_CACHE_HOME or ~/.cache)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nearline-recall" / "text-embeddings.npz"


@torch.no_grad()
def embed_texts(texts: list[str], cache_path: Path | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, 384) float32 unit vectors of `texts`; an empty text gets zeros. Each distinct text is embedded once:
    vectors are cached by text hash in `cache_path` (default: default_cache_path())."""
    cache_path = cache_path or default_cache_path()
    known: dict[str, np.ndarray] = {}
    if cache_path.is_file():
        with np.load(cache_path, allow_pickle=False) as stored:
            known = dict(zip(stored["hashes"].tolist(), stored["vectors"], strict=True))
    hashes = [text_hash(text) for text in texts]
    missing = sorted({(digest, text) for digest, text in zip(hashes, texts, strict=True)
                      if text and digest not in known})
    if missing:
        model, tokenizer = load_minilm(), TextTokenizer.packaged()
        by_length = sorted(missing, key=lambda pair: len(pair[1]))  # similar lengths pad little
        for start in tqdm(range(0, len(by_length), batch_size), desc="embedding item texts", unit="batch",
                          disable=None):
            chunk = by_length[start: start + batch_size]
            ids, mask = tokenizer([text for _, text in chunk])
            vectors = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            known.update(zip((digest for digest, _ in chunk), vectors, strict=True))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(cache_path.name + ".tmp.npz")
        np.savez(tmp, hashes=np.array(list(known)), vectors=np.stack(list(known.values())).astype(np.float32))
        os.replace(tmp, cache_path)
    zeros = np.zeros(TEXT_DIM, dtype=np.float32)
    return np.stack([known[digest] if text else zeros for digest, text in zip(hashes, texts, strict=True)]
                    ).astype(np.float32).reshape(len(texts), TEXT_DIM)
