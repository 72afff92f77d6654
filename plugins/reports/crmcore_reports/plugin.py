"""The ``reports`` plugin's hook implementations (the entry point)."""

from __future__ import annotations


import crmcore

from .activity import ActivityReport
from .cohorts import RetentionCohortsReport
from .forecast import ForecastReport
from .funnel import FunnelReport
from .performance import SalesPerformanceReport
from .pipeline import PipelineReport
from .segments_report import SegmentsReport
from .service import ServiceQualityReport
from .value import CustomerValueReport
from .winloss import WinLossReport

REPORTS = (PipelineReport, ForecastReport, FunnelReport, WinLossReport, SalesPerformanceReport,
           RetentionCohortsReport, CustomerValueReport, ServiceQualityReport, ActivityReport, SegmentsReport)


@crmcore.hookimpl
def register_reports(register: crmcore.Register[crmcore.Report]) -> None:
    """Register the ten sales, customer and service reports."""
    for report in REPORTS:
        register(report())


@crmcore.hookimpl
def register_renderers(register: crmcore.Register[crmcore.Renderer]) -> None:
    """Register the html, markdown, xlsx (and chart) output formats."""
    # The renderers load matplotlib (html charts) and openpyxl (xlsx) when they first render, not here.
    from .renderers import RENDERERS

    for renderer in RENDERERS:
        register(renderer)
