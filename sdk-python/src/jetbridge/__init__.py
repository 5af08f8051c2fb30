"""Jetbridge SDK (placeholder: filled in below)."""
