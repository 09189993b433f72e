"""compat_api.templates.catalog."""
