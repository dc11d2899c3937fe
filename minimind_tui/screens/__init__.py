"""Screens: the configure form, the run dashboard, and the small dialogs over them."""
