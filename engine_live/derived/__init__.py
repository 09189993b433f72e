"""engine_live.derived.node_metrics."""
