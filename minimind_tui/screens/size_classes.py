"""A screen's size classes (Textual's breakpoints), known before its widgets are styled."""

from __future__ import annotations

from textual.geometry import Size
from textual.screen import Screen


def size_classes(screen: Screen, size: Size) -> dict[str, bool]:
    """The classes a screen's `HORIZONTAL_BREAKPOINTS` and `VERTICAL_BREAKPOINTS` give it at
    `size`, as Textual sets them on its first resize: the highest breakpoint the size reaches.
    Set as the screen composes, its widgets are styled with them from the start; set by that
    resize, every widget is styled again (0.3 s of CPU for the form's ~400)."""
    classes: dict[str, bool] = {}
    for breakpoints, length in ((screen.HORIZONTAL_BREAKPOINTS, size.width),
                                (screen.VERTICAL_BREAKPOINTS, size.height)):
        reached = [(least, name) for least, name in breakpoints or () if length >= least]
        classes |= {name: False for _, name in breakpoints or ()}
        if reached:
            classes[max(reached)[1]] = True
    return classes
