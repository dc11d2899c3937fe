"""A run as the app sees it: its phase, where its events come from, launching it, its history."""
