"""engine_live.warnings."""
