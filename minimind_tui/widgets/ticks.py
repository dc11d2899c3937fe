"""A checkbox and a selection list whose boxes say ticked or not in text, not in colour alone.

Textual draws `▐X▌` for a box either way and tells the two apart by colour, which a monochrome
terminal, a screen reader and a copy of the screen (tmux capture-pane) lose: the export
dialog's --overwrite looked the same ticked or not. Here an empty box is `▐ ▌`.
"""

from __future__ import annotations

from rich.segment import Segment
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, SelectionList

TICK, EMPTY = Checkbox.BUTTON_INNER, " "


class TickBox(Checkbox):
    def render(self) -> Content:
        self.BUTTON_INNER = TICK if self.value else EMPTY  # read by the render below
        return super().render()


class TickList(SelectionList):
    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        # The box is the second segment, its style's meta naming the option's index.
        segments = list(strip)
        if len(segments) < 2 or segments[1].text != TICK:
            return strip
        index = (segments[1].style.meta if segments[1].style else {}).get("option")
        if index is None or self.get_option_at_index(index).value in self.selected:
            return strip
        segments[1] = Segment(EMPTY, segments[1].style)
        return Strip(segments, strip.cell_length)
