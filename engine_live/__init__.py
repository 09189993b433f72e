"""engine_live."""
