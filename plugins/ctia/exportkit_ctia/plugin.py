"""CTIA plugin entry point (being built)."""
