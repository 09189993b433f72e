"""compat_api.routes."""
