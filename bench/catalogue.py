"""A serving catalogue of any size for the service benchmark: an untrained TBGRecall model whose item vectors
cluster like trained ones, exported and indexed through the real `recall export` and `build-index` code.

Vectors from a random tower would be isotropic, the worst case for IVF; trained catalogues cluster, so the item
embeddings are set around 1,000 centres (and each item's category follows its centre).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from bench.datasets import CACHE
from contract.manifests import FeatureSchema
from contract.vocab import Vocabularies
from index_builder.build import build_and_publish
from index_builder.versions import IndexRejected, current_version, verified_manifest
from model_export.export import export_run
from service.history import apply_event, encoder_inputs, new_history
from training.config import ModelConfig, RunConfig
from training.model import RecallModel
from training.run_dir import Run, save_run

N_CENTRES, N_CATEGORIES, DIM, MAX_LEN = 1000, 200, 64, 200
CONTEXTS = ["home", *(f"search:c{n}" for n in range(N_CATEGORIES))]
SCENARIOS = ["home", "search", "cart"]
SCHEMA = FeatureSchema(max_len=MAX_LEN, max_items_per_session=32, session_gap_s=1800, has_timestamp=True,
                       with_context_tokens=True)


def synthetic_history(rng: np.random.Generator, n_items: int, n_events: int, start: int) -> dict:
    """A plausible user: daily sessions of 8 clicks around one centre, each session under a context."""
    history, centre = new_history(), int(rng.integers(N_CENTRES))
    for n in range(n_events):
        item = int(centre + N_CENTRES * rng.integers(max(n_items // N_CENTRES, 1))) % n_items + 1
        apply_event(history, {"item_id": str(item), "timestamp": start + 86_400 * (n // 8) + 60 * n, "action": 1,
                              "context": CONTEXTS[(centre + n // 8) % len(CONTEXTS)],
                              "scenario": SCENARIOS[n % 3], "session_id": None}, SCHEMA)
    return history


def build_catalogue(n_items: int, root: Path = CACHE / "service") -> tuple[Path, Path]:
    """(artifacts, index root) for `n_items`, built once and cached."""
    directory = root / f"items-{n_items}"
    artifacts, index_root = directory / "artifacts", directory / "index"
    if (index_root / "CURRENT").exists():
        try:
            # Cached by an older release: a version format it no longer serves, or an export without a query step.
            if verified_manifest(index_root, current_version(index_root))["model"].get("query_step"):
                return artifacts, index_root
        except IndexRejected:
            pass
        shutil.rmtree(directory)
    rng = np.random.default_rng(0)
    vocabs = Vocabularies()
    vocabs.items.encode(np.arange(1, n_items + 1))
    vocabs.contexts.encode(np.array(CONTEXTS, dtype=object))
    vocabs.scenarios.encode(np.array(SCENARIOS, dtype=object))
    vocabs.categories.encode(np.arange(N_CATEGORIES))
    vocabs.users.encode(np.arange(1, 11))
    sizes = {**vocabs.sizes(), "sellers": 2}
    config = RunConfig(model=ModelConfig(dim=DIM, n_layers=2, n_heads=2, max_len=MAX_LEN))
    torch.manual_seed(0)
    model = RecallModel(config.model, sizes).eval()
    centre_of_item = np.r_[0, np.arange(n_items) % N_CENTRES]
    centres = rng.normal(size=(N_CENTRES, DIM)).astype(np.float32)
    with torch.no_grad():
        embedding = centres[centre_of_item] + 0.35 * rng.normal(size=(n_items + 1, DIM)).astype(np.float32)
        model.item_tower.item_embedding.weight.copy_(torch.from_numpy(embedding * 0.05))
        category = torch.from_numpy(centre_of_item % N_CATEGORIES + 1)
        model.item_tower.set_side_info({"item_category": category})
    histories = [synthetic_history(rng, n_items, 40, 1_767_000_000) for _ in range(32)]
    sample = encoder_inputs(histories, [h["sessions"][-1]["context"] for h in histories], ["home"] * 32,
                            np.full(32, 1_767_100_000), vocabs, SCHEMA)
    run = Run(model=model, config=config, vocabs=vocabs, sample_inputs=sample,
              metrics={"data": {"session_gap_s": SCHEMA.session_gap_s, "has_timestamp": True}})
    save_run(directory / "run", run, history=[])
    export_run(directory / "run", artifacts)
    build_and_publish(artifacts, index_root)
    return artifacts, index_root
