"""Screens whose first showing styles their widgets once, not twice."""

from __future__ import annotations

from textual import events


class StyledOnce:
    """Mixed in before `Screen`: each time a screen is shown, Textual styles all its widgets
    again, in case the app's CSS changed while it was hidden. The first time, every widget was
    styled as it mounted, moments before, with the same CSS, so the second pass changes nothing
    (the same screen, drawn both ways, is the same to the byte). For the form's ~400 widgets it
    was a fifth of the app's start (0.4 s of CPU). Handlers run from the most derived class
    down, so this one runs before `Screen`'s own, which restyles when told to."""

    _shown = False

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        if not self._shown:
            self._shown = True
            event.refresh_styles = False
