"""Small trained runs for the tests: what `recall train` and `recall export` write, on a synthetic world."""

from __future__ import annotations


def train_tiny_run(directory, run_path, encoder: str = "tbgrecall", epochs: int = 1, layout: str = "sessions",
                   **model_options):
    """Train a small model on a world's events and save it as a run (what `recall train` writes);
    `model_options` set other ModelConfig fields."""
    from contract.events import load_events
    from training.config import ModelConfig, RunConfig, TrainConfig
    from training.recommender import sample_inputs
    from training.run_dir import Run, save_run
    from training.trainer import train

    log = load_events(directory / "events.parquet", directory / "items.parquet")
    config = RunConfig(model=ModelConfig(encoder=encoder, dim=32, n_heads=2, max_len=96, layout=layout,
                                         **model_options),
                       train=TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, threads=2))
    result = train(log, config, protocol="temporal", show_progress=False)
    metrics = {"validation": result.metrics, "data": {"session_gap_s": 1800, "has_timestamp": True}}
    save_run(run_path, Run(model=result.model, config=config, vocabs=log.vocabs, metrics=metrics,
                           sample_inputs=sample_inputs(result.model, log)), result.history)
    return run_path


def exported_run(root, small_world, epochs: int, **model_options):
    """A TBGRecall run trained on the small world for `epochs`, exported: (run path, artifact path)."""
    from model_export.export import export_run

    directory, _ = small_world
    run = train_tiny_run(directory, root / "run", epochs=epochs, **model_options)
    export_run(run, root / "artifacts")
    return run, root / "artifacts"


def catalogue_with_new_items(directory):
    """A small log whose items file has titles, categories and attributes, and lists six items (i30-i35) that no
    event touches: new to any model trained on it."""
    import pandas as pd

    from contract.events import load_events

    events = pd.DataFrame([{"user_id": u, "item_id": f"i{(u + n) % 30}", "timestamp": 1_700_000_000 + 3600 * n}
                           for u in range(90) for n in range(10)])  # a session per event
    items = pd.DataFrame({"item_id": [f"i{n}" for n in range(36)],
                          "category": [f"c{n % 4}" for n in range(36)],
                          "title": [f"{['red', 'blue'][n % 2]} item {n % 6}" for n in range(36)],
                          "attributes": [f"size:{n % 3}" for n in range(36)]})
    events.to_parquet(directory / "events.parquet")
    items.to_parquet(directory / "items.parquet")
    return load_events(directory / "events.parquet", directory / "items.parquet")
