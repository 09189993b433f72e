"""compat_api.cli.main."""
