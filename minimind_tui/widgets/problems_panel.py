"""Every problem with the settings in one list, cross-field rules included."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from minimind.settings import Problem


class ProblemsPanel(Static):
    """`-ok` when there is nothing to fix, so the stylesheet can colour the border."""

    _shown: list[Problem] | None = None

    def show(self, problems: list[Problem]) -> None:
        if problems == self._shown:  # validation runs on every keystroke
            return
        self._shown = problems
        self.set_class(not problems, "-ok")
        if not problems:
            self.update(Text("✓ ready to start", style="bold"))
            return
        text = Text()
        for i, problem in enumerate(problems):
            if i:
                text.append("\n")
            text.append("✗ ", style="bold")
            name = problem.loc.partition(".")[2] or "settings"
            if name in problem.message:  # a rule over several fields names them itself
                text.append(problem.message)
            else:
                text.append(f"{name} ", style="bold")
                text.append(problem.message)
        self.update(text)
