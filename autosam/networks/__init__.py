"""autosam.networks."""
