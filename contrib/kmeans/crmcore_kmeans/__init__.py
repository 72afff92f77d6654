"""crmcore-kmeans: k-means customer segments for crmcore.

Registers the ``kmeans`` segmenter: scikit-learn k-means on standardised log
recency, frequency and monetary value of won deals, k given or chosen by
silhouette score, clusters named by their centroids::

    crm.segments.run("kmeans", as_of="2026-06-30", options={"k": 4, "seed": 7})
"""

from .model import cluster, features
from .segmenter import NO_PURCHASES, KMeansOptions, KMeansSegmenter

__version__ = "0.1.0"
__all__ = ["NO_PURCHASES", "KMeansOptions", "KMeansSegmenter", "cluster", "features"]
