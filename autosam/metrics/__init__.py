"""autosam.metrics."""
