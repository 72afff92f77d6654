"""Shared test set-up.  Database fixtures (crm_db_url, crm_factory, ...) come from
crmcore.testing, the pytest plugin crmcore ships for plugin authors."""
