"""compat_api."""
