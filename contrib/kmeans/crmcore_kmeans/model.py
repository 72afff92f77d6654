"""Standardised log R/F/M features, k-means, the choice of k and cluster names.

Features, per customer with a purchase: ``log1p`` of recency in days,
frequency and monetary value (logs because all three are heavily skewed;
``log1p`` because recency and value can be 0), each standardised to mean 0
and variance 1 (scikit-learn's ``StandardScaler``).  k-means is
scikit-learn's ``KMeans`` (k-means++, ``n_init=10``, ``random_state=seed``),
so a run is reproducible for a given seed and data.
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

N_INIT = 10
SILHOUETTE_SAMPLE = 10_000  # silhouette is O(n^2): score a seeded sample beyond this
FEATURES = ("recency", "frequency", "monetary")
# Words for a centroid coordinate (standardised): below -0.5, between, above 0.5.
WORDS = {
    "monetary": ("low value", "mid value", "high value"),
    "frequency": ("rare", "occasional", "frequent"),
    "recency": ("recent", "lapsing", "lapsed"),  # recency is days since: low is recent
}
CUT = 0.5


def features(recency_days: NDArray[np.float64], frequency: NDArray[np.float64],
             monetary: NDArray[np.float64]) -> NDArray[np.float64]:
    """The unscaled feature matrix: log1p of recency days, frequency, monetary value."""
    return np.log1p(np.column_stack([np.maximum(recency_days, 0), frequency, monetary]))


@attrs.frozen
class Clustering:
    """A fitted clustering, clusters renumbered in a stable order (see :func:`cluster`)."""

    k: int
    labels: NDArray[np.int64]          # 0..k-1 per customer, in the stable order
    names: tuple[str, ...]             # per cluster
    scaled: NDArray[np.float64]        # standardised features per customer
    centroids: NDArray[np.float64]     # standardised, per cluster
    silhouettes: dict[int, float]      # k -> silhouette score, when k was chosen

    def distances(self, rows: slice) -> NDArray[np.float64]:
        """Euclidean distances (standardised space) of some customers to every centroid."""
        return np.linalg.norm(self.scaled[rows, None, :] - self.centroids[None, :, :], axis=2)


def fit_kmeans(scaled: NDArray[np.float64], k: int, seed: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(scaled)


def choose_k(scaled: NDArray[np.float64], k_min: int, k_max: int, seed: int) -> tuple[int, dict[int, float]]:
    """The k in ``k_min..k_max`` with the highest silhouette score (the smaller k on a tie)."""
    sample = min(len(scaled), SILHOUETTE_SAMPLE)
    scores = {}
    for k in range(k_min, k_max + 1):
        labels = fit_kmeans(scaled, k, seed).labels_
        scores[k] = float(silhouette_score(scaled, labels, sample_size=sample, random_state=seed))
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def cluster(raw: NDArray[np.float64], k: int | None, k_min: int, k_max: int, seed: int) -> Clustering:
    """Standardise, choose k if not given, cluster, and name the clusters.

    Clusters are renumbered by centroid: highest value first, then most
    frequent, then most recent, so numbers and names do not depend on
    k-means' arbitrary label order.
    """
    scaled = StandardScaler().fit_transform(raw)
    silhouettes: dict[int, float] = {}
    if k is None:
        k, silhouettes = choose_k(scaled, k_min, k_max, seed)
    model = fit_kmeans(scaled, k, seed)
    centers = model.cluster_centers_
    order = np.lexsort((centers[:, 0], -centers[:, 1], -centers[:, 2]))  # last key is primary
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    centroids = centers[order]
    return Clustering(k, rank[model.labels_], names_for(centroids), scaled, centroids, silhouettes)


def word(feature: str, z: float) -> str:
    low, mid, high = WORDS[feature]
    return low if z < -CUT else high if z > CUT else mid


def names_for(centroids: NDArray[np.float64]) -> tuple[str, ...]:
    """"high value, frequent, recent" from each standardised centroid; a
    repeated name gets " (2)", " (3)" in cluster order."""
    names: list[str] = []
    for center in centroids:
        base = ", ".join(word(f, center[i]) for f, i in (("monetary", 2), ("frequency", 1), ("recency", 0)))
        count = sum(1 for n in names if n == base or n.startswith(base + " ("))
        names.append(base if count == 0 else f"{base} ({count + 1})")
    return tuple(names)
