"""Widgets of the configure screen and the dashboard, one per module."""
