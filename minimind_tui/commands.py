"""Command palette entries (ctrl+p): every action of the app, findable by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from minimind_tui.presets import is_user_preset, list_presets, preset_label

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp


class MiniMindCommands(Provider):
    """Names are prefixed by area ("run: start", "preset: load tiny") as posting does, so
    typing the area lists its commands."""

    @property
    def _app(self) -> MiniMindApp:
        return self.app  # type: ignore[return-value]

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self._app
        configure = app.configure_screen
        commands: list[tuple[str, Callable[[], object], str]] = [
            ("run: start", app.action_start, "Start training with the form's settings (F5)"),
            ("run: stop", app.action_stop,
             "Finish the current step, write a checkpoint and stop (F6)"),
            ("run: resume from a run folder…", partial(self._on_form, configure.action_resume),
             "Load an earlier run's config.toml and continue it (ctrl+o)"),
            ("preset: save as…", partial(self._on_form, configure.action_save_preset),
             "Save the form's settings as a user preset (ctrl+s)"),
            ("data: inspect…", partial(self._on_form, configure.action_inspect_data),
             "Tokenize the data file and show documents, tokens, lengths and problems (F4)"),
            ("view: form / dashboard", app.action_toggle_view,
             "Switch between the settings form and the run dashboard (F2)"),
            ("view: x axis steps / tokens",
             partial(self._on_dashboard, app.dashboard_screen.action_toggle_x_axis),
             "Plot against optimizer steps or tokens seen (ctrl+t)"),
            ("theme: toggle light / dark", app.action_toggle_theme,
             "Switch between textual-light and textual-dark (F3)"),
        ]
        for name, path in list_presets().items():
            whose = "your" if is_user_preset(path) else "this bundled"
            commands.append((f"preset: load {preset_label(name, path)}",
                             partial(self._on_form, partial(configure.load_preset, name)),
                             f"Replace the form's values with {whose} preset"))
        return commands

    def _on_form(self, action: Callable[[], object]) -> None:
        self._app.switch_mode("configure")
        action()

    def _on_dashboard(self, action: Callable[[], object]) -> None:
        self._app.switch_mode("dashboard")
        action()

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
