"""crmcore-clv: predictive customer lifetime value for crmcore.

Registers the ``clv`` segmenter: the BG/NBD purchase model (Fader, Hardie &
Lee 2005) and the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and
CLV"), fitted by maximum likelihood with scipy on the CRM's won deals::

    crm.segments.run("clv", as_of="2026-06-30", options={"horizon_weeks": 26})

The models are usable on their own: :mod:`crmcore_clv.bgnbd`,
:mod:`crmcore_clv.gamma_gamma`, :mod:`crmcore_clv.transactions`.
"""

from typing import TYPE_CHECKING, Any

from .fitting import FitError
from .segmenter import CLVOptions, CLVSegmenter

if TYPE_CHECKING:
    from .bgnbd import BGNBDParams
    from .gamma_gamma import GammaGammaParams

__version__ = "0.1.0"
__all__ = ["BGNBDParams", "CLVOptions", "CLVSegmenter", "FitError", "GammaGammaParams"]


def __getattr__(name: str) -> Any:
    """The models' parameter classes load numpy and scipy on first use, not at start-up."""
    if name == "BGNBDParams":
        from .bgnbd import BGNBDParams

        return BGNBDParams
    if name == "GammaGammaParams":
        from .gamma_gamma import GammaGammaParams

        return GammaGammaParams
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
