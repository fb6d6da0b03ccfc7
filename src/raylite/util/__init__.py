"""Utilities on top of the core API (state listings)."""
