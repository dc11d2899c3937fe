"""The configure screen: presets, the settings form, live readouts and what blocks a start."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, Select
from textual.worker import Worker, WorkerState

from minimind.chain import STARTS_FROM, starting_points
from minimind.environment import validate_for_start
from minimind.resume_check import resume_start_step
from minimind.run_files import CONFIG_FILE
from minimind.runs import runs_root
from minimind.settings import DATA_FIELDS, ModelSettings, Problem, RunSettings, SettingsError
from minimind.settings_moves import stage_moves, switch_moves
from minimind_tui.form.schema import field_specs, form_data, settings_values
from minimind_tui.form.presets import (bundled_preset_dir, is_user_preset, list_presets,
                                       preset_data, preset_label, preset_settings, preset_tables,
                                       save_user_preset)
from minimind_tui.form.readouts import (MODEL_FIELDS, STEPS_FIELDS, DataSummary, ModelSummary,
                                   blocking_problem, data_key, last_run_rate, model_summary,
                                   scan_data)
from minimind_tui.screens.inspect import InspectScreen
from minimind_tui.screens.resume import ResumeScreen
from minimind_tui.screens.save_preset import SavePresetScreen
from minimind_tui.screens.size_classes import size_classes
from minimind_tui.screens.styled_once import StyledOnce
from minimind_tui.screens.start_from import StartFromScreen
from minimind_tui.widgets.problems_panel import ProblemsPanel
from minimind_tui.widgets.readouts_panel import ReadoutsPanel
from minimind_tui.widgets.setting_field import SettingField
from minimind_tui.widgets.settings_form import SettingsForm
from minimind_tui.worker_end import worker_ended

DATA_PATH_FIELDS = tuple(f"train.{name}" for name in DATA_FIELDS)
FROM_WEIGHT = "train.from_weight"
INSPECT_BINDING = Binding("f8", "inspect_data", "Inspect data", id="inspect_data",
                          key_display="F8", tooltip="Tokenize the focused data file (else "
                                                    "data_path) and show what it holds")

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp


class ConfigureScreen(StyledOnce, Screen[None]):
    app: MiniMindApp

    BINDINGS = [
        Binding("ctrl+l", "pick_preset", "Presets", id="pick_preset",
                tooltip="Open the preset list; choosing one replaces the form"),
        # Out of the footer, which F8 needs at 80 columns: the toolbar's button names the key.
        Binding("ctrl+s", "save_preset", "Save", id="save_preset", show=False,
                tooltip="Save these settings as a user preset"),
        Binding("ctrl+o", "resume", "Resume", id="resume",
                tooltip="Load an earlier run folder's settings and continue it"),
        Binding("f2", "app.toggle_view", "Dashboard", id="to_dashboard", key_display="F2",
                tooltip="Show the run dashboard"),
        INSPECT_BINDING,
        # Only on from_weight (see check_action), where the footer has room for it.
        Binding("f7", "pick_start", "Runs to start from", id="pick_start", key_display="F7",
                tooltip="The finished runs this stage can start from; picking one puts its "
                        "weights in from_weight"),
    ]
    # From 140 columns the help fits beside each field; below it shows under the focused one.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (140, "-wide")]

    def __init__(self, values: dict[str, Any], baseline: dict[str, Any],
                 preset: str | None) -> None:
        super().__init__(id="configure")
        self.specs = field_specs()
        self._values = values
        self.baseline = baseline
        """Values of the loaded preset (or run folder): fields that differ get a mark."""
        self.preset = preset
        self.problems: list[Problem] = []
        self._settings: RunSettings | None = None
        self._draft: RunSettings | None = None
        """The settings with defaults for the invalid fields: what the readouts work from."""
        self._resume_step = 0  # the draft's (`resume_start_step`)
        self._model: ModelSummary | str | None = None
        self._data: dict[str, DataSummary | str] = {}
        """Data scans by `data_key`: counting lines of a big file once per file is enough."""
        self._scanning: set[str] = set()
        self._validated: dict[str, Any] | None = None
        self._taken: dict[str, tuple[Any, Any, Any]] = {}
        """What a stage move replaced: loc -> (the stage left, its value there, the value
        set), given back on a move back to that stage (`_follow_changes`)."""
        self._run_seen: tuple[int, bool] | None = None
        """The app's run (its id, and whether it had ended) when the form was last shown."""
        self._folders_changed = False
        """A run's files went while another screen was shown (`check_again_when_shown`)."""

    def compose(self) -> ComposeResult:
        self.update_classes(size_classes(self, self.app.size), update=False)
        with Horizontal(id="toolbar"):
            yield Label("preset", id="preset-label")
            yield Select(self._preset_options(), value=self._preset_value(), id="preset-select",
                         prompt="custom", compact=True)
            yield Button(f"Start {self.app.start_key}", id="start-button", variant="success", action="app.start",
                         compact=True)
            yield Button("Save preset ^s", id="save-button", action="screen.save_preset",
                         compact=True)
            yield Button("Resume ^o", id="resume-button", action="screen.resume", compact=True)
        with Horizontal(id="configure-body"):
            yield SettingsForm(self.specs, self._values, id="settings-form")
            # Problems first: an sft run's readouts fill more than a screen's height.
            with VerticalScroll(id="side-panel"):
                yield ProblemsPanel(id="problems")
                yield ReadoutsPanel(id="readouts")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#readouts").border_title = "Readouts"
        self.query_one("#problems").border_title = "Problems"
        self.watch(self.app, "run_phase", self._update_start, init=False)
        self.watch(self.query_one("#preset-select", Select), "expanded", self._preset_list_shown,
                   init=False)
        self.validate()
        self.query_one(SettingsForm).focus_field(self.specs[0].loc)

    # -- validation and readouts ---------------------------------------------------------
    @property
    def form(self) -> SettingsForm:
        return self.query_one(SettingsForm)

    def current_settings(self) -> RunSettings | None:
        """The form's settings, or None while anything is invalid."""
        return self._settings

    @on(SettingsForm.Changed)
    def validate(self, _event: SettingsForm.Changed | None = None, *, force: bool = False
                 ) -> None:
        form = self.form
        raw = form.raw_values()
        if raw == self._validated and not force:  # widgets report their initial values too
            return
        if self._follow_changes(raw):
            return  # the fields set report a change of their own
        self._validated = raw
        changed = form.mark_changed(self.baseline)
        self._draft, self.problems = validate_for_start(form_data(self.specs, raw), changed)
        self._settings = None if self.problems else self._draft
        # Read from the folder's run.json once here, not at each redraw of the readouts.
        self._resume_step = resume_start_step(self._draft.train)
        form.show_problems(self.problems)
        self.query_one(ProblemsPanel).show(self.problems)
        self._update_start()
        self._refresh_readouts(self._draft)

    def _follow_changes(self, raw: dict[str, Any]) -> bool:
        """A new stage brings its defaults (full_sft_<h>.pth) and its kind of bundled data to
        the fields holding the old stage's (`stage_moves`); a value the user chose stays. A
        switch moved off the value some fields need takes them back to their defaults
        (`switch_moves`: cosine after wsd, its decay_fraction). True if any moved."""
        before = self._validated or {}
        train = {loc.removeprefix("train."): value for loc, value in raw.items()
                 if loc.startswith("train.")}
        left, now = before.get("train.stage"), raw.get("train.stage")
        moved = {f"train.{name}": value for name, value in stage_moves(train, left, now).items()}
        if moved or left != now:
            # Back to a stage a move left: what it took there (tiny's packing, which sft
            # turned off) comes back where the field still holds what the move set.
            back = {loc: value for loc, (stage, value, set_to) in self._taken.items()
                    if stage == now and loc not in moved and str(raw.get(loc)) == str(set_to)}
            self._taken = {loc: taken for loc, taken in self._taken.items() if loc not in back}
            self._taken.update({loc: (left, raw.get(loc), value) for loc, value in moved.items()})
            moved.update(back)
        for section, values in switch_moves(_sections(before), _sections(raw)).items():
            moved.update({f"{section}.{name}": value for name, value in values.items()})
        self.set_fields(moved)
        return bool(moved)

    def _update_start(self, _phase: str | None = None) -> None:
        button = self.query_one("#start-button", Button)
        button.disabled = self._settings is None or self.app.run_active
        button.label = "Running…" if self.app.run_active else f"Start {self.app.start_key}"

    def _refresh_readouts(self, settings: RunSettings) -> None:
        # Importing the model code takes seconds and a data scan reads a whole file: both
        # run in threads; the panel shows the last known values until they report back.
        if blocking_problem(self.problems, MODEL_FIELDS) is None:
            self.run_worker(partial(model_summary, settings.model), thread=True,
                            exclusive=True, group="model-summary", exit_on_error=False)
        scan = _scan_args(settings)
        key = data_key(*scan)
        if (blocking_problem(self.problems, STEPS_FIELDS) is None
                and key not in self._data and key not in self._scanning):
            self._scanning.add(key)
            self.run_worker(partial(scan_data, *scan), name=key,
                            thread=True, group="data-scan", exit_on_error=False)
        self._show_readouts()

    def _show_readouts(self) -> None:
        if self._draft is None:
            return
        data = self._data.get(data_key(*_scan_args(self._draft)))
        # A watched run's speed is another machine's, maybe a GPU's: no ETA from it.
        rate = None if self.app.watching else last_run_rate(self.app.history, self._draft)
        self.query_one(ReadoutsPanel).show(self._draft, self.problems, self._model, data, rate,
                                           self._resume_step,
                                           INSPECT_BINDING.key_display or "")
        if blocking_problem(self.problems, MODEL_FIELDS) is not None:
            self.form.show_family_defaults(None)  # the last model's would be stale
        elif isinstance(self._model, ModelSummary):
            self.form.show_family_defaults(self._model.family_defaults)

    def on_screen_resume(self) -> None:
        # A run that began or ended since changed the ETA's rate, and maybe the folder a check
        # read (a resume run to its end leaves nothing to train).
        h = self.app.history
        seen, self._run_seen = self._run_seen, (h.run_id, h.finished is not None)
        if (seen is not None and seen != self._run_seen) or self._folders_changed:
            self._folders_changed = False
            self.validate(force=True)
        else:
            self._show_readouts()  # the rate of a run going on

    def check_again_when_shown(self) -> None:
        """A run's files were deleted elsewhere (the runs view): a resume or from_weight the
        form found fine may be gone. Checked when the form is next shown, not while hidden."""
        self._folders_changed = True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group not in ("model-summary", "data-scan") or not worker_ended(event):
            return
        if worker.group == "model-summary" and event.state != WorkerState.CANCELLED:
            self._model = (worker.result if event.state == WorkerState.SUCCESS
                           else f"cannot build the model: {worker.error}")
        elif worker.group == "data-scan":
            self._scanning.discard(worker.name)
            self._data[worker.name] = (worker.result if event.state == WorkerState.SUCCESS
                                       else f"cannot read: {worker.error}")
        self._show_readouts()

    # -- presets and run folders --------------------------------------------------------
    def _preset_options(self) -> list[tuple[str, str]]:
        presets = list_presets()
        options = [(preset_label(name, path), name) for name, path in presets.items()]
        if self.preset and self.preset not in presets:  # --preset path/to/file.toml
            return [(Path(self.preset).stem, self.preset), *options]
        return options

    def _preset_value(self) -> str | Any:
        return self.preset if self.preset else Select.NULL

    def _set_preset(self, preset: str | None) -> None:
        self.preset = preset
        select = self.query_one("#preset-select", Select)
        with self.prevent(Select.Changed):
            select.set_options(self._preset_options())
            select.value = self._preset_value()

    @on(Select.Changed, "#preset-select")
    def _preset_chosen(self, event: Select.Changed) -> None:
        if event.value != Select.NULL and event.value != self.preset:
            self.load_preset(str(event.value))

    def _preset_list_shown(self, shown: bool) -> None:
        """While the list is open its value is blank, so that choosing the preset already shown
        is told from closing it (Escape): the first resets the form to it, as "choosing one
        replaces the form" promises; the second puts the value back."""
        select = self.query_one("#preset-select", Select)
        if shown or select.value == Select.NULL:
            with self.prevent(Select.Changed):
                select.value = Select.NULL if shown else self._preset_value()
        elif select.value == self.preset:  # (another one loads on its Changed)
            self.load_preset(self.preset)

    def load_preset(self, name: str) -> None:
        """Replace the form with a preset's values; they become the "changed" baseline."""
        try:
            values = settings_values(preset_data(name))
        except SettingsError as e:
            self.notify(str(e), title=f"Cannot load preset {name}", severity="error",
                        markup=False)
            self._set_preset(self.preset)
            return
        self._set_preset(name)
        self._replace_values(values, baseline=values)

    def action_pick_preset(self) -> None:
        select = self.query_one("#preset-select", Select)
        select.focus()
        select.action_show_overlay()

    def action_save_preset(self) -> None:
        settings, problems = preset_settings(form_data(self.specs, self.form.raw_values()))
        if problems:
            self.notify("Fix the settings marked in red first.", title="Cannot save",
                        severity="warning")
            return
        bundled = {p.stem for p in bundled_preset_dir().glob("*.toml")}
        user = {name for name, path in list_presets().items() if is_user_preset(path)}
        suggestion = self.preset if self.preset in user else ""
        self.app.push_screen(SavePresetScreen(suggestion or "", bundled, user),
                             partial(self._save_preset, settings))

    def _save_preset(self, settings: RunSettings, name: str | None) -> None:
        if not name:
            return
        try:
            path = save_user_preset(settings, name)
        except (SettingsError, OSError) as e:
            self.notify(str(e), title="Cannot save preset", severity="error", markup=False)
            return
        self.baseline = settings_values(settings)
        self._set_preset(name)
        self.validate(force=True)
        self.notify(str(path), title=f"Saved preset {name}", markup=False)

    def action_resume(self) -> None:
        out_dir = self.form.raw_values().get("train.out_dir") or ""
        self.app.push_screen(ResumeScreen(str(out_dir)), self.load_run_folder)

    def load_run_folder(self, folder: Path | None) -> None:
        """Load a run's config.toml, point out_dir at it and turn from_resume on."""
        if folder is None:
            return
        try:
            saved = settings_values(preset_tables(folder / CONFIG_FILE))
        except SettingsError as e:
            self.notify(str(e), title="Cannot resume", severity="error", markup=False)
            return
        self._set_preset(None)
        self._replace_values({**saved, "train.out_dir": str(folder), "train.from_resume": True},
                             baseline=saved)

    def set_fields(self, values: dict[str, Any]) -> None:
        """Change a few fields as the user could (what Start chose for a used run folder)."""
        for loc, value in values.items():
            self.form.fields[loc].set_value(value)

    def _replace_values(self, values: dict[str, Any], baseline: dict[str, Any]) -> None:
        self.baseline = baseline
        self._validated = None  # the marks must follow the new baseline even if no value moved
        self._taken = {}
        self.form.load(values)

    # -- the run to start from --------------------------------------------------------------
    def _focused_field(self) -> str | None:
        widget = self.focused
        while widget is not None and not isinstance(widget, SettingField):
            widget = widget.parent
        return widget.spec.loc if isinstance(widget, SettingField) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pick_start":
            return self._focused_field() == FROM_WEIGHT
        return True

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()  # F7 comes and goes with from_weight's focus

    def action_pick_start(self) -> None:
        raw = self.form.raw_values()
        stage = str(raw.get("train.stage") or "pretrain")
        if not STARTS_FROM.get(stage):
            self.notify("A pretraining run starts from scratch or from any weights file; set "
                        "stage to sft or lora to pick a finished run.", title="Runs to start "
                        "from", severity="warning")
            return
        root = runs_root(str(raw.get("train.out_dir") or ""))
        model = self._draft.model if self._draft else ModelSettings()
        self.app.push_screen(StartFromScreen(stage, root, starting_points(root, stage, model)),
                             self._start_from_picked)

    def _start_from_picked(self, weights: str | None) -> None:
        if weights:
            self.form.fields[FROM_WEIGHT].set_value(weights)
            self.form.focus_field(FROM_WEIGHT)

    # -- inspecting data ------------------------------------------------------------------
    def _focused_data_field(self) -> str | None:
        loc = self._focused_field()
        return loc if loc in DATA_PATH_FIELDS else None

    def action_inspect_data(self) -> None:
        """Inspect the focused data field's file, else data_path's: F8 works wherever the
        cursor is (a key that does nothing elsewhere, silently, reads as broken)."""
        raw = self.form.raw_values()
        loc = self._focused_data_field() or "train.data_path"
        path = str(raw.get(loc) or "").strip()
        if not path:
            self.notify(f"{loc.rpartition('.')[2]} is empty.", title="Nothing to inspect",
                        severity="warning")
            return
        # The inspection is at this length, as this stage reads the file: a value of the
        # draft's standing in for an invalid one (512) was inspected without a word.
        problem = blocking_problem(self.problems, ("train.max_seq_len", "train.stage"))
        if problem is not None or self._draft is None:
            self.notify(f"Fix {problem} first: the inspection needs it.",
                        title="Cannot inspect yet", severity="warning", markup=False)
            if problem is not None and problem.loc:
                self.form.focus_field(problem.loc)
            return
        draft = self._draft.train
        tokenizer_path = str(raw.get("train.tokenizer_path") or "")
        self.app.push_screen(InspectScreen(path, tokenizer_path, draft.max_seq_len, draft.stage),
                             self._inspected)

    def _inspected(self, result: object) -> None:
        if result is not None:  # the readouts can now count exactly
            self._data.clear()
            if self._draft is not None:
                self._refresh_readouts(self._draft)

    def focus_problem(self, reason: str) -> None:
        """Put the cursor on the field an engine error names ("train.data_path: …")."""
        loc = reason.partition(":")[0].strip()
        self.form.focus_field(loc)


def _scan_args(settings: RunSettings) -> tuple[str, str, str, int]:
    """What a data scan reads and its cache key is made of (`data_key`, `scan_data`)."""
    t = settings.train
    return t.data_path, t.tokenizer_path, t.stage, t.max_seq_len


def _sections(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A form's raw values by loc ("train.lr_schedule") as sections of raw values."""
    sections: dict[str, dict[str, Any]] = {}
    for loc, value in raw.items():
        section, _, name = loc.partition(".")
        sections.setdefault(section, {})[name] = value
    return sections
