"""Semantic ids: items tokenised by residual k-means over their content vectors (TIGER, PLUM; seed 002).

Level 1 clusters the text vectors; level 2 clusters what level 1's centroid left unexplained, and so on. An item's
codes are its centroid at each level, so items with similar text share their first codes, and a new item's codes
(the nearest centroids of its own text vector) reach embeddings that items seen in training have trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

LEVELS = 3
MIN_CODES, MAX_CODES = 16, 256


def codes_per_level(n_items: int) -> int:
    """About sqrt(n) codes a level (a power of two between 16 and 256), so level 1 groups a few dozen items and
    level 2 nearly separates them."""
    return int(np.clip(2 ** np.round(np.log2(max(n_items, 1) ** 0.5)), MIN_CODES, MAX_CODES))


@dataclass
class SemanticIds:
    codes: np.ndarray  # (n, levels) int64, 0..K-1 per level
    centroids: np.ndarray  # (levels, K, d) float32

    def stats(self) -> dict:
        """How much of the catalogue each level's code prefix tells apart, and the items whose whole code is
        shared with another item (collisions)."""
        n = len(self.codes)
        if n == 0:
            return {"items": 0}
        separated = []
        for level in range(1, self.codes.shape[1] + 1):
            _, counts = np.unique(self.codes[:, :level], axis=0, return_counts=True)
            separated.append(round(float(len(counts)) / n, 4))
        _, counts = np.unique(self.codes, axis=0, return_counts=True)
        return {"items": n, "codes_per_level": int(self.centroids.shape[1]), "levels": int(self.codes.shape[1]),
                "distinct_share_by_level": separated, "colliding_share": round(float(counts[counts > 1].sum()) / n, 4)}


def fit_semantic_ids(vectors: np.ndarray, levels: int = LEVELS, n_codes: int | None = None,
                     seed: int = 0) -> SemanticIds:
    """Residual k-means over (n, d) content vectors."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n_codes = n_codes or codes_per_level(len(vectors))
    n_codes = min(n_codes, len(vectors))
    residual = vectors.copy()
    codes = np.zeros((len(vectors), levels), dtype=np.int64)
    centroids = np.zeros((levels, n_codes, vectors.shape[1]), dtype=np.float32)
    for level in range(levels):
        kmeans = faiss.Kmeans(vectors.shape[1], n_codes, niter=25, seed=seed + level, verbose=False,
                              min_points_per_centroid=1, max_points_per_centroid=10_000)
        kmeans.train(residual)
        _, nearest = kmeans.index.search(residual, 1)
        codes[:, level] = nearest[:, 0]
        centroids[level] = kmeans.centroids
        residual -= kmeans.centroids[nearest[:, 0]]
    return SemanticIds(codes=codes, centroids=centroids)


def assign_semantic_ids(vectors: np.ndarray, centroids: np.ndarray) -> SemanticIds:
    """The codes of (n, d) content vectors under centroids fitted before (a warm start keeps its codebook, so
    code c still means what its trained embedding learned)."""
    residual = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    codes = np.zeros((len(vectors), len(centroids)), dtype=np.int64)
    for level, level_centroids in enumerate(centroids):
        index = faiss.IndexFlatL2(level_centroids.shape[1])
        index.add(np.ascontiguousarray(level_centroids, dtype=np.float32))
        _, nearest = index.search(residual, 1)
        codes[:, level] = nearest[:, 0]
        residual -= level_centroids[nearest[:, 0]]
    return SemanticIds(codes=codes, centroids=np.asarray(centroids, dtype=np.float32))

