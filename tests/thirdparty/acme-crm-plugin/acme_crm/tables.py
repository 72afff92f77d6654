"""The table ACME owns (created by the revisions in ``migrations/``)."""

from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table

from crmcore.store import UTCDateTime

metadata = MetaData()

acme_welcomes = Table(
    "acme_welcomes", metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
    Column("welcomed_at", UTCDateTime, nullable=False),
)
