"""stream_hub."""
