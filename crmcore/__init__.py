"""crmcore: a small CRM core; plugins supply segmentation, loyalty,
notification and report strategies.

Plugins import only from this module::

    from crmcore import hookimpl, Segmenter, Assignment

Commands a plugin adds take the command-line session with
``@crmcore.pass_session`` (``crmcore.Session``); both are imported on first use,
so ``import crmcore`` does not load click and rich.
"""

from typing import TYPE_CHECKING, Any

from .startup import building as _building

with _building():  # the collector pauses while the package is built (crmcore.startup)
    from .app import CRM
    from .application.clock import parse_as_of
    from .application.components import Component, currency_option
    from .application.plugin_settings import PluginSettings
    from .application.plugins import hookimpl
    from .application.registry import Register
    from .application.roles import Role
    from .application.uow import UnitOfWork
    from .config import Config
    from .config.secrets import read as read_secret
    from .domain.customfields import CustomField
    from .domain.entities import (
        Contact,
        Customer,
        CustomerKind,
        Deal,
        Direction,
        Interaction,
        InteractionKind,
        LifecycleStage,
        Pipeline,
        Stage,
        StageOutcome,
        Task,
        TaskPriority,
        TaskSource,
        TaskStatus,
    )
    from .domain.errors import (
        ConfigError,
        CRMError,
        DuplicateCustomer,
        HasHistory,
        MergeRefused,
        RecordArchived,
        StaleVersion,
        HookError,
        InsufficientPoints,
        NotAuthorized,
        NotFound,
        PluginError,
        UnknownComponent,
        ValidationError,
    )
    from .domain.spreadsheet import xlsx_column_width, xlsx_number_format
    from .domain.validation import currency_digits, normalize_email, normalize_phone
    from .loyalty import LedgerEntry, LoyaltyScheme
    from .migrations import PluginSchema
    from .notify import (
        Channel,
        Delivered,
        DispatchResult,
        Message,
        PermanentError,
        TransientError,
    )
    from .reports import Chart, Column, Renderer, Report, ReportContext, ReportResult, month_of_label
    from .segments import (
        Assignment,
        Assignments,
        EveryoneElse,
        MembershipChange,
        MembershipChanges,
        SegmentContext,
        Segmenter,
        SegmentRun,
    )

if TYPE_CHECKING:
    from .cli.context import Session, pass_session

__version__ = "0.1.0"

# The command line's names, imported when first asked for (PEP 562).
_CLI_NAMES = ("Session", "pass_session")


def __getattr__(name: str) -> Any:
    if name in _CLI_NAMES:
        from .cli import context

        return getattr(context, name)
    raise AttributeError(f"module 'crmcore' has no attribute {name!r}")

__all__ = [
    "CRM", "Assignment", "Assignments", "CRMError", "Channel", "Chart", "Column", "Component", "Config", "ConfigError",
    "Contact", "CustomField", "Customer", "CustomerKind", "Deal", "Delivered", "Direction", "DispatchResult", "EveryoneElse",
    "DuplicateCustomer", "HasHistory", "HookError", "MergeRefused", "RecordArchived", "StaleVersion",
    "InsufficientPoints", "Interaction", "InteractionKind", "LedgerEntry", "LifecycleStage",
    "LoyaltyScheme", "MembershipChange", "MembershipChanges", "Message", "NotAuthorized", "NotFound", "PermanentError",
    "Pipeline", "PluginError", "PluginSchema", "PluginSettings", "Register", "Session", "Renderer", "Report", "ReportContext", "ReportResult", "Role",
    "SegmentContext", "SegmentRun", "Segmenter", "Stage", "StageOutcome", "Task", "TaskPriority", "TaskSource", "TaskStatus", "TransientError",
    "UnitOfWork", "UnknownComponent", "ValidationError", "currency_digits", "currency_option", "hookimpl", "month_of_label", "normalize_email",
    "normalize_phone", "parse_as_of", "pass_session", "read_secret", "xlsx_column_width", "xlsx_number_format",
]
