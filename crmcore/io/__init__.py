"""Import and export: CSV, JSON Lines and XLSX files in and out of a CRM.

    from crmcore.io import import_file, export_entities, ImportOptions

    report = import_file(crm, "customers", "customers.csv",
                         ImportOptions(on_error="skip", reject_file="rejects.csv"))
    export_entities(crm, "deals", "deals.xlsx", filters={"stage": "won"})

The command line (``crm import``, ``crm export``) is a thin layer over these.
"""

from .exporter import ExportReport, export_columns, export_entities
from .importer import (
    ImportFailed,
    ImportOptions,
    ImportProgress,
    ImportReport,
    RowError,
    import_file,
)
from .mapping import ColumnMapping, MappingError, load_mapping_file, load_value_mapping, parse_map_options
from .readers import RecordError, SourceError, open_reader, read_all
from .writers import WriteError

__all__ = [
    "ColumnMapping", "ExportReport", "ImportFailed", "ImportOptions", "ImportProgress", "ImportReport",
    "MappingError", "RecordError", "RowError", "SourceError", "WriteError", "export_columns",
    "export_entities", "import_file", "load_mapping_file", "load_value_mapping", "open_reader", "parse_map_options", "read_all",
]
