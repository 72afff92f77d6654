"""crmcore-clv: predictive customer lifetime value for crmcore.

Registers the ``clv`` segmenter: the BG/NBD purchase model (Fader, Hardie &
Lee 2005) and the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and
CLV"), fitted by maximum likelihood with scipy on the CRM's won deals::

    crm.segments.run("clv", as_of="2026-06-30", options={"horizon_weeks": 26})

The models are usable on their own: :mod:`crmcore_clv.bgnbd`,
:mod:`crmcore_clv.gamma_gamma`, :mod:`crmcore_clv.transactions`.
"""

from .bgnbd import BGNBDParams
from .fitting import FitError
from .gamma_gamma import GammaGammaParams
from .segmenter import CLVOptions, CLVSegmenter

__version__ = "0.1.0"
__all__ = ["BGNBDParams", "CLVOptions", "CLVSegmenter", "FitError", "GammaGammaParams"]
