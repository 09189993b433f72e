"""snapshot_writer."""
