"""crmcore-reports: first-party reports and the Markdown, XLSX and HTML renderers.

Each report module's docstring says exactly what it counts; the filters they
share are in :mod:`crmcore_reports.scope`.
"""

from .activity import ActivityOptions, ActivityReport
from .cohorts import CohortOptions, RetentionCohortsReport
from .forecast import ForecastOptions, ForecastReport
from .funnel import FunnelOptions, FunnelReport
from .performance import PerformanceOptions, SalesPerformanceReport, Target
from .pipeline import PipelineOptions, PipelineReport
from .scope import ReportFilters
from .segments_report import SegmentsOptions, SegmentsReport
from .service import ServiceOptions, ServiceQualityReport
from .value import CustomerValueReport, ValueOptions
from .winloss import WinLossOptions, WinLossReport

__version__ = "0.2.0"
__all__ = [
    "ActivityOptions", "ActivityReport", "CohortOptions", "CustomerValueReport", "ForecastOptions",
    "ForecastReport", "FunnelOptions", "FunnelReport", "PerformanceOptions", "PipelineOptions", "PipelineReport",
    "ReportFilters", "RetentionCohortsReport", "SalesPerformanceReport", "SegmentsOptions", "SegmentsReport",
    "ServiceOptions", "ServiceQualityReport", "Target", "ValueOptions", "WinLossOptions", "WinLossReport",
]
