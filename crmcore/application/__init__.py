"""The application layer: use cases over the domain.

* :mod:`.services`: the entity services (``crm.customers``, ``crm.deals``, ...);
* :mod:`.uow`: the unit of work (one transaction, the repositories, after-commit
  callbacks) and the record of the unit currently open;
* :mod:`.plugins`: the plugin manager (the hooks themselves are :mod:`crmcore.hookspecs`);
* :mod:`.components`, :mod:`.registry`: what the plugin families share
  (named components with typed options, registries that remember the plugin);
* :mod:`.clock`: "now" and ``as_of`` parsing.

The CRM object that wires these to the family engines is :mod:`crmcore.app`.
"""
