"""Index building and publishing: recall against exact search, the recall floor, atomic versions, rejection."""

from __future__ import annotations

import json
import threading

import faiss
import numpy as np
import pytest

from index_builder.build import RecallTooLow, build_and_publish
from index_builder.faiss_index import BadFactory, build_index, factory_for
from index_builder.versions import IndexRejected, current_version, open_version, publish


def clustered_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres, like item-tower outputs (isotropic noise would be a worst case)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    vectors = centres[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_recall_against_exact_search(kind):
    vectors, queries = clustered_vectors(6000), clustered_vectors(200, seed=1)
    built = build_index(vectors, queries, factory_for(kind, len(vectors)), k=50, recall_floor=0.95, use_gpu=False)
    truth = faiss.knn(queries, vectors, 50, metric=faiss.METRIC_INNER_PRODUCT)[1]
    found = built.index.search(queries, 50)[1]
    measured = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(found, truth, strict=True)])
    assert measured == pytest.approx(built.recall["recall@50"], abs=1e-9)
    assert measured >= 0.95
    assert (built.params == {}) if kind == "flat" else built.params


def test_below_the_recall_floor_nothing_is_published(tiny_artifacts, tmp_path):
    _, artifacts = tiny_artifacts
    with pytest.raises(RecallTooLow, match="not published"):
        build_and_publish(artifacts, tmp_path / "index", kind="ivf", recall_floor=1.01)
    assert current_version(tmp_path / "index") is None


def test_published_index_maps_rows_to_items_and_names_the_model(tiny_artifacts, tmp_path):
    _, artifacts = tiny_artifacts
    report = build_and_publish(artifacts, tmp_path / "index")
    model_version = json.loads((artifacts / "manifest.json").read_text())["model_version"]
    loaded = open_version(tmp_path / "index")
    assert loaded.version == report.version == current_version(tmp_path / "index")
    assert loaded.manifest["model_version"] == loaded.manifest["model"]["model_version"] == model_version
    item_vectors = np.load(artifacts / "item_vectors.npy")
    assert loaded.index.ntotal == len(item_vectors) - 1 and list(loaded.id_map[:3]) == [1, 2, 3]
    _, rows = loaded.index.search(item_vectors[5:6], 1)
    assert loaded.id_map[rows[0, 0]] == 5  # an item finds itself through the id map
    assert loaded.manifest["recall"]["recall@100"] >= 0.95 and loaded.manifest["build_seconds"] >= 0


def publish_vectors(root, artifacts, vectors: np.ndarray, keep: int = 3, **model_changes) -> str:
    """Publish a flat index of `vectors` with a real export's model files; `model_changes` edit the export's
    manifest as another model would have written it."""
    model = {**json.loads((artifacts / "manifest.json").read_text()), **model_changes}
    built = build_index(vectors, vectors[:20], "Flat", use_gpu=False)
    manifest = {"model_version": json.loads((artifacts / "manifest.json").read_text())["model_version"],
                "model": model}
    return publish(root, built.index, np.arange(len(vectors)), manifest, artifacts, keep=keep)


def test_a_reader_polling_current_never_sees_a_partial_index(tmp_path, tiny_artifacts):
    _, artifacts = tiny_artifacts
    vectors = clustered_vectors(3000)
    publish_vectors(tmp_path, artifacts, vectors)
    failures, stop = [], threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            try:
                assert open_version(tmp_path).index.ntotal == 3000
            except Exception as error:  # any failure is what the test looks for
                failures.append(error)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    for _ in range(15):
        publish_vectors(tmp_path, artifacts, vectors, keep=2)
    stop.set()
    reader.join()
    assert failures == []
    assert len(list((tmp_path / "versions").iterdir())) == 2  # older versions pruned, the live one kept


def test_a_version_is_self_contained_and_serves_after_its_export_is_gone(tiny_artifacts, tmp_path):
    """A rebuild used to replace the export every kept version pointed to; now each version owns its files."""
    import shutil

    _, artifacts = tiny_artifacts
    export = tmp_path / "export"
    shutil.copytree(artifacts, export)
    report = build_and_publish(export, tmp_path / "index")
    shutil.rmtree(export)
    directory = tmp_path / "index" / "versions" / report.version
    assert {"user_encoder.onnx", "vocabularies.json", "item_side.npz"} <= {p.name for p in directory.iterdir()}
    assert "artifacts" not in report.manifest  # no path outside the version
    assert open_version(tmp_path / "index").version == report.version


def test_other_model_version_is_rejected(tmp_path, tiny_artifacts):
    _, artifacts = tiny_artifacts
    publish_vectors(tmp_path, artifacts, clustered_vectors(500), model_version="b" * 16)
    with pytest.raises(IndexRejected, match="must not be mixed"):
        open_version(tmp_path)


def test_wrong_dimension_is_rejected(tmp_path, tiny_artifacts):
    _, artifacts = tiny_artifacts
    publish_vectors(tmp_path, artifacts, clustered_vectors(500, dim=16))
    with pytest.raises(IndexRejected, match="dimension 16, the encoder gives 32"):
        open_version(tmp_path)


def test_a_version_from_before_self_contained_versions_is_refused_with_the_fix(tmp_path, tiny_artifacts):
    _, artifacts = tiny_artifacts
    version = publish_vectors(tmp_path, artifacts, clustered_vectors(500))
    manifest_path = tmp_path / "versions" / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["model"]
    manifest_path.write_text(json.dumps({**manifest, "artifacts": "/gone"}))
    with pytest.raises(IndexRejected, match="rebuild it with `recall build-index`"):
        open_version(tmp_path)


@pytest.mark.parametrize("name", ["index.faiss", "user_encoder.onnx"])
def test_a_corrupt_file_in_a_version_is_rejected(tmp_path, tiny_artifacts, name):
    _, artifacts = tiny_artifacts
    version = publish_vectors(tmp_path, artifacts, clustered_vectors(500))
    path = tmp_path / "versions" / version / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexRejected, match=f"{name} is missing or its checksum"):
        open_version(tmp_path)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexRejected, match="no CURRENT index"):
        open_version(tmp_path)


def fabricated_artifacts(directory, n_items: int, dim: int = 32):
    """What `recall build-index` reads from an export: the manifest, the item vectors (row 0 is padding) and the
    model files it copies into the version. Fabricated (the model files are placeholders, never loaded here) so
    that a catalogue big enough for IVF4096 costs no training."""
    directory.mkdir()
    (directory / "manifest.json").write_text(json.dumps({"model_version": "f" * 16, "dim": dim}))
    padding = np.zeros((1, dim), np.float32)
    np.save(directory / "item_vectors.npy", np.vstack([padding, clustered_vectors(n_items, dim)]))
    for name in ("user_encoder.onnx", "vocabularies.json", "item_side.npz"):
        (directory / name).write_bytes(b"placeholder")
    return directory


def test_any_factory_string_is_built_and_its_search_parameter_tuned():
    vectors, queries = clustered_vectors(3000), clustered_vectors(200, seed=1)
    # SQ, not PQ: faiss-cpu's PQ training takes 20-40 s on 3,000 vectors here (the e2e test below covers PQ).
    built = build_index(vectors, queries, "IVF64,SQ8", k=50, recall_floor=0.8, use_gpu=False)
    assert built.factory == "IVF64,SQ8" and isinstance(built.index, faiss.IndexIVFScalarQuantizer)
    assert set(built.params) == {"nprobe"} and built.recall["recall@50"] >= 0.8


@pytest.mark.e2e  # IVF4096 trains 4,096 centroids: about a minute on 2 cores
def test_build_index_takes_a_faiss_factory_string(tmp_path):
    from cli.main import main

    artifacts = fabricated_artifacts(tmp_path / "artifacts", 6000)
    assert main(["build-index", "--artifacts", str(artifacts), "--out", str(tmp_path / "index"),
                 "--factory", "IVF4096,PQ32", "--recall-floor", "0.8", "--gpu", "no"]) == 0
    loaded = open_version(tmp_path / "index")
    assert loaded.manifest["factory"] == "IVF4096,PQ32"
    assert faiss.extract_index_ivf(loaded.index).nlist == 4096
    assert loaded.manifest["search_params"]["nprobe"] >= 8 and loaded.manifest["recall"]["recall@100"] >= 0.8


def test_a_bad_factory_string_is_refused_naming_the_option(tmp_path, capsys):
    from cli.main import main

    artifacts = fabricated_artifacts(tmp_path / "artifacts", 500)
    assert main(["build-index", "--artifacts", str(artifacts), "--out", str(tmp_path / "index"),
                 "--factory", "IVFxx,Flat"]) == 2
    assert "--factory" in capsys.readouterr().err
    assert current_version(tmp_path / "index") is None
    with pytest.raises(BadFactory, match="could not train"):  # more lists than vectors to train them on
        build_index(clustered_vectors(100), clustered_vectors(10), "IVF4096,Flat", use_gpu=False)
