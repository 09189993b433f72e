"""engine_live.model."""
