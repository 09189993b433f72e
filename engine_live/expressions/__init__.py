"""engine_live.expressions."""
