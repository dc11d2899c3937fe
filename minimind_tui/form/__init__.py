"""The settings form without Textual: its schema, the presets, and the readouts."""
