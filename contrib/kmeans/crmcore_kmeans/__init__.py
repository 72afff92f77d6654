"""crmcore-kmeans: k-means customer segments for crmcore.

Registers the ``kmeans`` segmenter: scikit-learn k-means on standardised log
recency, frequency and monetary value of won deals, k given or chosen by
silhouette score, clusters named by their centroids::

    crm.segments.run("kmeans", as_of="2026-06-30", options={"k": 4, "seed": 7})
"""

from typing import TYPE_CHECKING, Any

from .segmenter import NO_PURCHASES, KMeansOptions, KMeansSegmenter

if TYPE_CHECKING:
    from .model import cluster, features

__version__ = "0.1.0"
__all__ = ["NO_PURCHASES", "KMeansOptions", "KMeansSegmenter", "cluster", "features"]


def __getattr__(name: str) -> Any:
    """``cluster`` and ``features`` load :mod:`.model` (numpy, scikit-learn) on first use, not at start-up."""
    if name in ("cluster", "features"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
