"""The ``kmeans`` segmenter: k-means on standardised log R/F/M.

Customers with a won deal up to ``as_of`` are clustered (see
:mod:`crmcore_kmeans.model`); each cluster is a segment named by its centroid
in words (``"high value, frequent, recent"``).  Customers without a purchase
get the segment ``"No purchases"``.  The score is the customer's distance to
their cluster's centroid (small: typical of the cluster).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

import crmcore
from crmcore.store import MONEY_SCALE

if TYPE_CHECKING:
    import numpy as np

    from .features import RFM
    from .model import Clustering

# numpy, scikit-learn and the modules that use them (.features, .model) are
# imported in the methods that cluster: registering the segmenter at start-up
# must not load them (see "Keep start-up fast" in docs/plugin-guide.md).

NO_PURCHASES = "No purchases"
BATCH = 5_000
DISTINCT_PREFIX = 1_000


def _at_least_two(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 2:
        # (message, attribute): crmcore names the field in the error.
        raise ValueError(f"must be at least 2 (k-means needs two clusters), got {value}", attribute)


def _not_below_k_min(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < instance.k_min:
        raise ValueError(f"{value} must not be below k_min ({instance.k_min})", attribute)


@attrs.frozen
class KMeansOptions:
    """Options of the ``kmeans`` segmenter (``[segments.kmeans]`` in crm.toml).

    :ivar k: number of clusters; None (default) chooses it by silhouette score.
    :ivar k_min: smallest k tried when choosing.
    :ivar k_max: largest k tried when choosing (capped at distinct customers - 1).
    :ivar seed: random seed of k-means (and of the silhouette sample): same
        seed and data, same clusters.
    :ivar currency: only deals in this currency count (None: all, summed as they are).
    """

    k: int | None = attrs.field(default=None, validator=_at_least_two)
    k_min: int = attrs.field(default=2, validator=_at_least_two)
    k_max: int = attrs.field(default=8, validator=[_at_least_two, _not_below_k_min])
    seed: int = 0
    currency: str | None = crmcore.currency_option()


def _distinct_rows(raw: np.ndarray, enough: int) -> int:
    """The number of distinct rows of ``raw``, or ``enough`` if there are at least that many.

    The checks below only compare the count with k (at most ``enough``); a
    prefix usually settles that without sorting every row.
    """
    import numpy as np

    head = len(np.unique(raw[:DISTINCT_PREFIX], axis=0)) if len(raw) else 0
    if head >= enough:
        return enough
    return head if len(raw) <= DISTINCT_PREFIX else len(np.unique(raw, axis=0))


class KMeansSegmenter(crmcore.Segmenter):
    """Clusters of customers by recency, frequency and value."""

    name = "kmeans"
    description = "k-means clusters on standardised log R/F/M of won deals, named by their centroids"
    options_type = KMeansOptions

    def cluster(self, ctx: crmcore.SegmentContext, options: KMeansOptions,
                without_purchases: bool = True) -> tuple[RFM, Clustering | None]:
        """Load R/F/M as of ``ctx.as_of`` and cluster the buyers (None when nobody bought).

        ``without_purchases=False``: do not list the customers without a purchase.
        """
        import numpy as np

        from .features import load_rfm
        from .model import cluster, features

        rfm = load_rfm(ctx.conn, ctx.config, ctx.as_of, options.currency, without_purchases)
        if len(rfm) == 0:
            return rfm, None  # nothing to cluster: everybody is "No purchases"
        raw = features(rfm.recency_days, rfm.frequency, np.array(rfm.monetary, dtype=float) / MONEY_SCALE)
        distinct = _distinct_rows(raw, max(options.k or 0, options.k_max, 2))
        where = f"[segments.{self.name}]"
        if options.k is not None:
            if distinct < options.k:
                raise crmcore.ConfigError(
                    f"{where} k = {options.k} needs at least {options.k} customers with distinct purchase "
                    f"histories; found {distinct} ({len(rfm)} customers with a won deal up to as_of)")
            return rfm, cluster(raw, options.k, options.k_min, options.k_max, options.seed)
        if distinct < 2 or len(rfm) < 3:
            raise crmcore.ConfigError(
                f"{where} choosing k needs at least 3 customers with a won deal up to as_of and 2 distinct "
                f"purchase histories; found {len(rfm)} customers, {distinct} distinct; set k or add data")
        # The silhouette score is defined for 2 <= k <= samples - 1, and k-means
        # cannot find more clusters than distinct points.
        k_max = min(options.k_max, distinct, len(rfm) - 1)
        k_min = min(options.k_min, k_max)
        return rfm, cluster(raw, None, k_min, k_max, options.seed)

    def assign(self, ctx: crmcore.SegmentContext, options: KMeansOptions) -> Any:
        rfm, fit = self.cluster(ctx, options, without_purchases=False)
        if fit is not None:
            yield from self._clustered(rfm, fit)
        # Everybody else has no purchase: assigned in SQL, not listed through Python.
        yield crmcore.EveryoneElse(NO_PURCHASES)

    @staticmethod
    def _clustered(rfm: RFM, fit: Clustering) -> Any:
        """Batches (columns) of assignments of the customers who bought."""
        import numpy as np

        from .model import FEATURES

        chosen = {"k": fit.k, "silhouettes": {str(k): round(s, 6) for k, s in fit.silhouettes.items()}} \
            if fit.silhouettes else {"k": fit.k}
        scale = Decimal(MONEY_SCALE)
        for start in range(0, len(rfm), BATCH):
            rows = slice(start, start + BATCH)
            # Plain Python numbers per column once (tolist), not a numpy scalar per field.
            labels = fit.labels[rows].tolist()
            distances = fit.distances(rows)
            scores = np.take_along_axis(distances, fit.labels[rows, None], axis=1)[:, 0]
            details = [{
                "cluster": label + 1,
                "recency_days": recency,
                "frequency": frequency,
                "monetary": str(Decimal(monetary) / scale),
                "features": dict(zip(FEATURES, features)),
                "distances": dict(zip(fit.names, distance)),
                **chosen,
            } for label, recency, frequency, monetary, features, distance in zip(
                labels, rfm.recency_days[rows].tolist(), rfm.frequency[rows].astype(np.int64).tolist(),
                rfm.monetary[rows], fit.scaled[rows].tolist(), distances.tolist())]
            yield crmcore.Assignments(rfm.customer_id[rows], [fit.names[label] for label in labels], scores, details)

    def explain(self, ctx: crmcore.SegmentContext, options: KMeansOptions, membership: Any) -> dict[str, Any]:
        """The customer's R/F/M, standardised log features and distance to every
        centroid: the segment is the nearest one."""
        details = dict(membership.get("details") or {})
        segment = membership.get("segment")
        if segment is None:
            return {"segment": None, "why": "not a member of this run (the customer was added after it)"}
        if segment == NO_PURCHASES or not details:
            return {"segment": segment, "why": "no won deal up to as_of, so not clustered"}
        distances = details["distances"]
        nearest = min(distances, key=distances.get)
        k_rule = ("k chosen by the highest silhouette score: " + ", ".join(
            f"k={k}: {s:.3f}" for k, s in details["silhouettes"].items())) if "silhouettes" in details \
            else f"k = {details['k']} from the options"
        return {"segment": segment, "cluster": details["cluster"],
                "recency_days": details["recency_days"], "frequency": details["frequency"],
                "monetary": details["monetary"], "features": details["features"],
                "distances": distances,
                "why": f"nearest centroid is {nearest!r} at {distances[nearest]:.3f}; {k_rule}"}
