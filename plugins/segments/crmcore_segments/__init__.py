"""crmcore-segments: the first-party RFM segmenter.

Enable the plugin (``plugins = ["segments"]``) and run::

    crm.segments.run("rfm", as_of="2026-06-30", options={"window_days": 365})

See :mod:`crmcore_segments.rfm` for the scoring and tie rules and
:mod:`crmcore_segments.names` for the named segments.
"""

from .names import NO_PURCHASES, SEGMENTS, segment_for
from .rfm import RFMOptions, RFMSegmenter

__version__ = "0.1.0"
__all__ = ["NO_PURCHASES", "SEGMENTS", "RFMOptions", "RFMSegmenter", "segment_for"]
