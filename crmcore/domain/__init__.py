"""The domain: entities and value types, custom fields, validation, conversion, errors.

Nothing here touches the database or the plugin machinery; every other layer
builds on it.
"""
