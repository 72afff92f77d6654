"""crmcore: a small CRM core; plugins supply segmentation, loyalty,
notification and report strategies.

Plugins import only from this module::

    from crmcore import hookimpl, Segmenter, Assignment
"""

from .app import CRM
from .application.clock import parse_as_of
from .application.components import Component, currency_option
from .application.plugins import hookimpl
from .application.registry import Register
from .application.uow import UnitOfWork
from .config import Config
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
)
from .domain.errors import (
    ConfigError,
    CRMError,
    HookError,
    InsufficientPoints,
    NotAuthorized,
    NotFound,
    PluginError,
    UnknownComponent,
    ValidationError,
)
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
from .reports import Chart, Column, Renderer, Report, ReportContext, ReportResult
from .segments import (
    Assignment,
    Assignments,
    EveryoneElse,
    MembershipChange,
    SegmentContext,
    Segmenter,
    SegmentRun,
)

__version__ = "0.1.0"

__all__ = [
    "CRM", "Assignment", "Assignments", "CRMError", "Channel", "Chart", "Column", "Component", "Config", "ConfigError",
    "Contact", "CustomField", "Customer", "CustomerKind", "Deal", "Delivered", "Direction", "DispatchResult", "EveryoneElse",
    "HookError",
    "InsufficientPoints", "Interaction", "InteractionKind", "LedgerEntry", "LifecycleStage",
    "LoyaltyScheme", "MembershipChange", "Message", "NotAuthorized", "NotFound", "PermanentError",
    "Pipeline", "PluginError", "PluginSchema", "Register", "Renderer", "Report", "ReportContext", "ReportResult",
    "SegmentContext", "SegmentRun", "Segmenter", "Stage", "StageOutcome", "TransientError",
    "UnitOfWork", "UnknownComponent", "ValidationError", "currency_digits", "currency_option", "hookimpl", "normalize_email",
    "normalize_phone", "parse_as_of",
]
