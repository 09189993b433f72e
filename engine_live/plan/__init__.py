"""engine_live.plan."""
