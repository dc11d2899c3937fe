"""Command palette entries (ctrl+p): every action of the app, findable by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from minimind_tui.form.presets import is_user_preset, list_presets, preset_label

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp


WATCH_ONLY_COMMANDS = ("run: watch", "view: runs", "view: x axis", "theme:", "model: export")


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
            ("run: start", app.action_start,
             f"Start training with the form's settings ({app.start_key})"),
            ("run: stop", app.action_stop,
             "Finish the current step, write a checkpoint and stop (F6)"),
            ("run: resume from a run folder…", partial(self._on_form, configure.action_resume),
             "Load an earlier run's config.toml and continue it (ctrl+o)"),
            ("run: start detached", app.action_start_detached,
             "Start in a child process that goes on when the app or the terminal closes"),
            ("run: watch a run folder…", app.action_watch,
             "Follow a run started elsewhere (another terminal, torchrun, a synced folder), "
             "read-only"),
            ("view: runs", app.action_runs,
             "The runs under the output folder: sort, compare curves, diff settings, delete (F4)"),
            ("preset: save as…", partial(self._on_form, configure.action_save_preset),
             "Save the form's settings as a user preset (ctrl+s)"),
            ("data: inspect…", partial(self._on_form, configure.action_inspect_data),
             "Tokenize the data file and show documents, tokens, lengths and problems (F8)"),
            ("model: export…", app.action_export,
             "Write a run's model as a Hugging Face folder (Llama, Qwen3, ...) or upstream's "
             ".pth"),
            ("view: form / dashboard", app.action_toggle_view,
             "Switch between the settings form and the run dashboard (F2)"),
            ("playground: open", app.open_playground,
             "Type a prompt and watch any trained model continue it"),
            ("playground: try the run's latest checkpoint",
             partial(self._on_dashboard, app.dashboard_screen.action_try_it),
             "Open the playground on the checkpoint the run saved last (F7 on the dashboard)"),
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

    def _available(self) -> list[tuple[str, Callable[[], object], str]]:
        commands = self._commands()
        if self._app.watch_only is not None:  # no form: nothing to start, load or save
            return [c for c in commands if c[0].startswith(WATCH_ONLY_COMMANDS)]
        return commands

    def _on_form(self, action: Callable[[], object]) -> None:
        self._app.switch_mode("configure")
        action()

    def _on_dashboard(self, action: Callable[[], object]) -> None:
        self._app.switch_mode("dashboard")
        action()

    async def discover(self) -> Hits:
        for name, callback, help_text in self._available():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._available():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
