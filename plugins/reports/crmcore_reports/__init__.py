"""crmcore-reports: the first-party ``pipeline`` report.

See :mod:`crmcore_reports.pipeline` for what "as of" and currencies mean.
"""

from .pipeline import PipelineOptions, PipelineReport

__version__ = "0.1.0"
__all__ = ["PipelineOptions", "PipelineReport"]
