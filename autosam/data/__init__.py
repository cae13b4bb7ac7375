"""autosam.data."""
