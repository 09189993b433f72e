"""engine_live.state."""
