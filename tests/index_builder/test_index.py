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
    loaded = open_version(tmp_path / "index", model_version=model_version, dim=32)
    assert loaded.version == report.version == current_version(tmp_path / "index")
    item_vectors = np.load(artifacts / "item_vectors.npy")
    assert loaded.index.ntotal == len(item_vectors) - 1 and list(loaded.id_map[:3]) == [1, 2, 3]
    _, rows = loaded.index.search(item_vectors[5:6], 1)
    assert loaded.id_map[rows[0, 0]] == 5  # an item finds itself through the id map
    assert loaded.manifest["recall"]["recall@100"] >= 0.95 and loaded.manifest["build_seconds"] >= 0


def test_a_reader_polling_current_never_sees_a_partial_index(tmp_path):
    vectors = clustered_vectors(3000)
    built = build_index(vectors, vectors[:50], "Flat", use_gpu=False)
    manifest = {"model_version": "m" * 16}
    publish(tmp_path, built.index, np.arange(3000), manifest)
    failures, stop = [], threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            try:
                assert open_version(tmp_path, model_version="m" * 16).index.ntotal == 3000
            except Exception as error:  # any failure is what the test looks for
                failures.append(error)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    for _ in range(15):
        publish(tmp_path, built.index, np.arange(3000), manifest, keep=2)
    stop.set()
    reader.join()
    assert failures == []
    assert len(list((tmp_path / "versions").iterdir())) == 2  # older versions pruned, the live one kept


def published(tmp_path, dim: int = 16) -> str:
    vectors = clustered_vectors(500, dim=dim)
    built = build_index(vectors, vectors[:20], "Flat", use_gpu=False)
    return publish(tmp_path, built.index, np.arange(500), {"model_version": "a" * 16})


def test_other_model_version_is_rejected(tmp_path):
    published(tmp_path)
    with pytest.raises(IndexRejected, match="must not be mixed"):
        open_version(tmp_path, model_version="b" * 16)


def test_wrong_dimension_is_rejected(tmp_path):
    published(tmp_path, dim=16)
    with pytest.raises(IndexRejected, match="dimension 16, the encoder gives 64"):
        open_version(tmp_path, dim=64)


def test_corrupt_index_file_is_rejected(tmp_path):
    version = published(tmp_path)
    index_file = tmp_path / "versions" / version / "index.faiss"
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(IndexRejected, match="checksum"):
        open_version(tmp_path)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexRejected, match="no CURRENT index"):
        open_version(tmp_path)


def fabricated_artifacts(directory, n_items: int, dim: int = 32):
    """What `recall build-index` reads from an export: the manifest's model version and the item vectors (row 0
    is padding). Fabricated so that a catalogue big enough for IVF4096 costs no training."""
    directory.mkdir()
    (directory / "manifest.json").write_text(json.dumps({"model_version": "f" * 16}))
    padding = np.zeros((1, dim), np.float32)
    np.save(directory / "item_vectors.npy", np.vstack([padding, clustered_vectors(n_items, dim)]))
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
