"""`sparsebench plugins` and third-party plugins from the `sparsebench.plugins` entry-point group."""
from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import sys
from typing import Literal

import pytest
import torch

import profiler.plugins as plugins
from accelerators.base import Accelerator, Prepared
from profiler.cli import main
from profiler.config import parse_config
from profiler.errors import ConfigError, PluginWarning, SparsebenchWarning
from profiler.plugins import ACCELERATORS, ENTRY_POINT_GROUP, REGISTRIES, load_entry_points


class TinyAccelerator(Accelerator):
    """A third-party accelerator that runs the model as it is.

    Second paragraph: not part of the summary.
    """

    name = "tiny-acc"

    def __init__(self, scale: float = 1.0, label: str | None = None, repeats: int = 3):
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self.scale, self.label, self.repeats = scale, label, repeats

    def prepare(self, model, example, settings) -> Prepared:
        return Prepared(copy.deepcopy(model).eval(), {"tiny_scale": self.scale})


class ClashingAccelerator(Accelerator):
    """Takes a built-in's name."""

    name = "torch-fp32"


class NotAPlugin:
    name = "stray"


class FakeDist:
    name = "sparsebench-tiny"
    version = "0.3"


class FakeEntryPoint:
    """What importlib.metadata returns: ``name``, ``value``, ``group``, ``dist``, ``load()``."""

    def __init__(self, name, obj=None, error=None):
        self.name, self.value, self.group = name, f"sparsebench_tiny:{name}", ENTRY_POINT_GROUP
        self.dist = FakeDist()
        self._obj, self._error = obj, error

    def load(self):
        if self._error is not None:
            raise self._error
        return self._obj


@pytest.fixture
def isolated_registries(monkeypatch):
    """Every registry and the problem list restored after the test."""
    for r in REGISTRIES:
        monkeypatch.setattr(r, "_classes", dict(r._classes))
        monkeypatch.setattr(r, "_sources", dict(r._sources))
    monkeypatch.setattr(plugins, "LOAD_PROBLEMS", [])


def _fake_group(monkeypatch, *eps):
    def entry_points(**kw):
        assert kw == {"group": ENTRY_POINT_GROUP}
        return list(eps)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def _plugins_json(capsys, *args) -> dict:
    assert main(["plugins", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


# -- describe / CLI -------------------------------------------------------------------------------


def test_describe_reads_the_constructor_and_docstring(isolated_registries):
    ACCELERATORS.register(TinyAccelerator, source="distribution 'x'")
    d = ACCELERATORS.describe("tiny-acc")
    assert d["kind"] == "accelerator" and d["section"] == "accelerators"
    assert d["summary"] == "A third-party accelerator that runs the model as it is."
    assert d["class"] == "tests.test_plugins_cli.TinyAccelerator"
    assert d["source"] == "distribution 'x'"
    assert d["params"] == [
        {"name": "scale", "type": "float", "default": 1.0, "required": False},
        {"name": "label", "type": "str | None", "default": None, "required": False},
        {"name": "repeats", "type": "int", "default": 3, "required": False},
    ]


def test_plugins_json_lists_every_registered_plugin(capsys):
    out = _plugins_json(capsys)
    listed = {(p["kind"], p["name"]) for p in out["plugins"]}
    assert listed == {(r.kind, n) for r in REGISTRIES for n in r.names()}
    assert {p["kind"] for p in out["plugins"]} == {"task", "pruner", "accelerator", "energy meter"}
    mag = next(p for p in out["plugins"] if p["name"] == "magnitude")
    sparsity = next(p for p in mag["params"] if p["name"] == "sparsity")
    assert sparsity["type"] == "float" and isinstance(sparsity["default"], float)
    assert all(p["summary"] for p in out["plugins"])


def test_plugins_text_has_every_kind_name_and_parameter(capsys):
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    for header in ("Tasks", "Pruners", "Accelerators", "Energy meters"):
        assert header in text
    for r in REGISTRIES:
        for n in r.names():
            assert f"  {n}: " in text
            for p in r.params(n):
                assert p in text


def test_plugins_filters_by_kind_and_by_name(capsys):
    for word in ("meter", "meters", "energy-meter"):
        kinds = {p["kind"] for p in _plugins_json(capsys, word)["plugins"]}
        assert kinds == {"energy meter"}
    names = [p["name"] for p in _plugins_json(capsys, "accelerator")["plugins"]]
    assert names == ACCELERATORS.names()
    only = _plugins_json(capsys, "sparse-cpu")["plugins"]
    assert [(p["kind"], p["name"]) for p in only] == [("accelerator", "sparse-cpu")]
    assert main(["plugins", "no-such-thing"]) == 2
    assert "neither a plugin kind" in capsys.readouterr().err


# -- entry points ---------------------------------------------------------------------------------


def test_entry_point_accelerator_is_listed_and_validates(monkeypatch, capsys, isolated_registries):
    _fake_group(monkeypatch, FakeEntryPoint("tiny-acc", TinyAccelerator))
    assert load_entry_points() == []
    assert ACCELERATORS.get("tiny-acc") is TinyAccelerator
    assert "sparsebench-tiny" in ACCELERATORS.source("tiny-acc")

    listed = _plugins_json(capsys, "tiny-acc")["plugins"]
    assert len(listed) == 1 and listed[0]["kind"] == "accelerator"
    assert "sparsebench-tiny" in listed[0]["source"] and "tiny-acc" in listed[0]["source"]
    assert main(["plugins", "accelerators"]) == 0
    text = capsys.readouterr().out
    assert "tiny-acc: A third-party accelerator" in text and "from distribution 'sparsebench-tiny'" in text

    raw = {"tasks": [{"name": "tiny-synthetic"}], "pruners": [{"name": "none"}],
           "accelerators": [{"name": "tiny-acc", "scale": [2.0, 3.0]}]}
    cfg = parse_config(raw)
    assert [a.params["scale"] for a in cfg.accelerators] == [2.0, 3.0]
    assert cfg.accelerators[0].params["repeats"] == 3
    with pytest.raises(ConfigError, match=r"accelerators\[0\]\.scale: expected a number"):
        parse_config({**raw, "accelerators": [{"name": "tiny-acc", "scale": "big"}]})
    with pytest.raises(ConfigError, match="scale must be > 0"):
        parse_config({**raw, "accelerators": [{"name": "tiny-acc", "scale": -1.0}]})
    # loading the same entry points again changes nothing
    assert load_entry_points() == []


class UntypedAccelerator(Accelerator):
    """A third-party accelerator whose constructor has no annotations."""

    name = "untyped-acc"

    def __init__(self, threshold=0.5, mode="fast", exact=False, extra=None, limit=float("inf")):
        self.threshold, self.mode, self.exact, self.extra, self.limit = threshold, mode, exact, extra, limit

    def prepare(self, model, example, settings) -> Prepared:
        return Prepared(copy.deepcopy(model).eval(), {})


def test_unannotated_parameters_take_the_type_of_their_default(isolated_registries, capsys):
    ACCELERATORS.register(UntypedAccelerator, source="distribution 'x'")
    described = ACCELERATORS.describe("untyped-acc")
    assert [(p["name"], p["type"], p.get("type_from_default")) for p in described["params"]] == [
        ("threshold", "number", True), ("mode", "str", True), ("exact", "bool", True), ("extra", "any", None),
        ("limit", "number", True)]
    assert json.loads(json.dumps(described, allow_nan=False))["params"][-1]["default"] == "inf"  # valid JSON
    assert main(["plugins", "untyped-acc"]) == 0
    assert re.search(r"threshold +number \(from its default\) +default 0\.5", capsys.readouterr().out)
    raw = {"tasks": [{"name": "tiny-synthetic"}], "pruners": [{"name": "none"}]}

    def parse(**params):
        return parse_config({**raw, "accelerators": [{"name": "untyped-acc", **params}]}).accelerators[0].params

    # a number default takes any number; a value of another type fails before any work, naming the key
    assert parse(threshold=2, mode="slow", exact=True, extra={"any": "thing"})["threshold"] == 2
    for key, bad, expected in [("threshold", "high", "a number"), ("threshold", True, "a number"),
                               ("mode", 3, "a string"), ("exact", 1, "true or false")]:
        with pytest.raises(ConfigError, match=rf"accelerators\[0\]\.{key}: expected {expected}, got {bad!r}"):
            parse(**{key: bad})
    with pytest.raises(ConfigError, match=r"accelerators\[0\]\.threshold: must be a finite number"):
        parse(threshold=float("nan"))
    # a list is still a sweep, each value checked
    sweep = parse_config({**raw, "accelerators": [{"name": "untyped-acc", "threshold": [0.1, 2]}]}).accelerators
    assert [a.params["threshold"] for a in sweep] == [0.1, 2]
    with pytest.raises(ConfigError, match=r"accelerators\[0\]\.threshold: expected a number, got 'x'"):
        parse(threshold=[0.1, "x"])


class ChoosyAccelerator(Accelerator):
    """A third-party accelerator whose string and number parameters have a closed set of values."""

    name = "choosy-acc"

    def __init__(self, mode: Literal["fast", "exact"] = "fast", level: Literal[1, 2] | None = None):
        self.mode, self.level = mode, level

    def prepare(self, model, example, settings) -> Prepared:
        return Prepared(copy.deepcopy(model).eval(), {})


def test_literal_choices_are_listed_and_enforced(isolated_registries, capsys):
    """A ``Literal`` annotation is the parameter's choices: `sparsebench plugins` lists them (the
    built-in codecarbon meter's tracking_mode too), and another value is refused naming them."""
    ACCELERATORS.register(ChoosyAccelerator, source="distribution 'x'")
    params = {p["name"]: p for p in ACCELERATORS.describe("choosy-acc")["params"]}
    assert (params["mode"]["type"], params["mode"]["choices"]) == ("str", ["fast", "exact"])
    assert (params["level"]["type"], params["level"]["choices"]) == ("int | None", [1, 2])
    assert main(["plugins", "choosy-acc"]) == 0
    assert re.search(r"mode +str +default \"fast\", one of fast, exact", capsys.readouterr().out)
    assert main(["plugins", "codecarbon"]) == 0
    assert re.search(r"tracking_mode +str +default \"machine\", one of machine, process", capsys.readouterr().out)
    raw = {"tasks": [{"name": "tiny-synthetic"}], "pruners": [{"name": "none"}]}

    def parse(**params):
        return parse_config({**raw, "accelerators": [{"name": "choosy-acc", **params}]}).accelerators[0].params

    assert parse(mode="exact", level=2) == {"mode": "exact", "level": 2}
    for key, bad, choices in [("mode", "Fast", "fast, exact"), ("level", 3, "1, 2"), ("level", True, "1, 2")]:
        with pytest.raises(ConfigError, match=rf"accelerators\[0\]\.{key}: must be one of {choices} \(got {bad!r}\)"):
            parse(**{key: bad})


def test_built_in_string_choices_are_declared_as_literals():
    """The built-ins' fixed string choices are Literal annotations (the module tuples are made from
    them): listed by `sparsebench plugins` for every plugin that takes them (the training parameters
    re-exported by ``training_params`` too), defaults among them, another value refused at config load."""
    from accelerators.int8_dynamic import QUANT_ENGINES
    from accelerators.sparse_int8 import DENSE_FALLBACKS
    from profiler.tasks.textdata import METRICS
    from pruners.structure import SCOPES
    from pruners.training import LR_SCHEDULES, PRECISIONS

    declared = {(r.kind, n, p["name"]): p for r in REGISTRIES for n in r.names() for p in r.describe(n)["params"]
                if "choices" in p}
    for key, p in declared.items():
        assert p["required"] or p["default"] is None or p["default"] in p["choices"], key
    training = {("pruner", n, k) for n in ("gmp", "movement", "obs") for k in ("lr_schedule", "scope", "precision")}
    expected = training | {("task", n, "finetune_precision") for n in ("sst2", "mrpc", "stsb", "text-classification",
                                                                         "tiny-synthetic")} | {
        ("task", "text-classification", "glue"), ("task", "text-classification", "metric"),
        ("pruner", "magnitude", "scope"), ("pruner", "obs", "update"),
        *(("pruner", "movement", k) for k in ("variant", "init", "score_optimizer")),
        ("accelerator", "int8-dynamic", "engine"), ("accelerator", "onnxruntime", "precision"),
        ("accelerator", "openvino", "precision"), ("accelerator", "sparse-cpu", "format"), ("accelerator", "cuda-2:4", "backend"),
        *(("accelerator", "sparse-int8", k) for k in ("format", "dense_format", "act_quant", "dense_fallback", "engine",
                                                      "attention")),
    }
    assert expected <= set(declared), sorted(expected - set(declared))
    for key, values in [(("pruner", "obs", "lr_schedule"), LR_SCHEDULES), (("pruner", "movement", "precision"), PRECISIONS),
                        (("pruner", "magnitude", "scope"), SCOPES), (("accelerator", "int8-dynamic", "engine"), QUANT_ENGINES),
                        (("accelerator", "sparse-int8", "dense_fallback"), DENSE_FALLBACKS),
                        (("task", "text-classification", "metric"), tuple(METRICS))]:
        assert declared[key]["choices"] == list(values), key
    raw = {"tasks": [{"name": "tiny-synthetic"}], "accelerators": [{"name": "torch-fp32"}]}
    with pytest.raises(ConfigError, match=r"pruners\[0\]\.lr_schedule: must be one of linear, cyclic \(got 'cosine'\)"):
        parse_config({**raw, "pruners": [{"name": "movement", "lr_schedule": "cosine"}]})


def test_broken_entry_point_warns_and_the_cli_still_works(monkeypatch, capsys, isolated_registries):
    _fake_group(monkeypatch, FakeEntryPoint("broken", error=ImportError("No module named 'torch_xyz'")),
                FakeEntryPoint("stray", NotAPlugin), FakeEntryPoint("tiny-acc", TinyAccelerator))
    with pytest.warns(PluginWarning) as caught:
        problems = load_entry_points()
    assert len(problems) == 2 and len(caught) == 2
    assert "'sparsebench-tiny'" in problems[0] and "'broken'" in problems[0] and "torch_xyz" in problems[0]
    assert "'stray'" in problems[1] and "not a subclass of a plugin base" in problems[1]
    assert "tiny-acc" in ACCELERATORS  # the good entry point of the same distribution still loads
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "Third-party plugins not loaded:" in out and "torch_xyz" in out
    assert _plugins_json(capsys)["problems"] == problems


def test_an_entry_point_that_calls_sys_exit_at_import_is_a_warning(monkeypatch, capsys, isolated_registries):
    """sys.exit() in a plugin's module body must not end sparsebench (silently, with rc 0)."""
    _fake_group(monkeypatch, FakeEntryPoint("exits", error=SystemExit(0)),
                FakeEntryPoint("needs-cuda", error=SystemExit("this plugin needs CUDA")),
                FakeEntryPoint("tiny-acc", TinyAccelerator))
    with pytest.warns(PluginWarning) as caught:
        problems = load_entry_points()
    assert len(problems) == 2 and len(caught) == 2
    assert "'exits'" in problems[0] and "failed to load: SystemExit: 0" in problems[0]
    assert "'needs-cuda'" in problems[1] and "SystemExit: this plugin needs CUDA" in problems[1]
    assert "tiny-acc" in ACCELERATORS
    assert main(["plugins"]) == 0
    assert "this plugin needs CUDA" in capsys.readouterr().out


def test_address_without_executor_ray_is_a_flag_error_before_the_config_is_read(tmp_path, capsys):
    """The config is not what is wrong: refused with the other flag conflicts, before it is read."""
    from tests.conftest import tiny_config

    missing = tmp_path / "no-such.toml"
    for flags in ([], ["--executor", "local"]):
        assert main(["run", str(missing), *flags, "--address", "1.2.3.4:1"]) == 2
        err = capsys.readouterr().err
        assert "sparsebench: --address: applies to --executor ray only\n" in err
        assert "invalid config" not in err and "no-such.toml" not in err
    local_run = tmp_path / "local-run"  # without --executor, a resumed run's own executor decides
    local_run.mkdir()
    (local_run / "manifest.json").write_text(json.dumps({"config": tiny_config(), "executor": "local"}))
    assert main(["run", "--resume", str(local_run), "--address", "1.2.3.4:1"]) == 2
    assert (f"sparsebench: cannot resume: --address: applies to --executor ray only; {local_run} was run with "
            "--executor local\n") in capsys.readouterr().err


def test_name_clash_with_a_built_in_names_both(monkeypatch, isolated_registries):
    builtin = ACCELERATORS.get("torch-fp32")
    _fake_group(monkeypatch, FakeEntryPoint("clash", ClashingAccelerator))
    with pytest.warns(PluginWarning, match="already taken"):
        (problem,) = load_entry_points()
    assert "tests.test_plugins_cli.ClashingAccelerator" in problem
    assert f"{builtin.__module__}.{builtin.__qualname__}" in problem and "built-in" in problem
    assert "'sparsebench-tiny'" in problem and "'clash'" in problem
    assert ACCELERATORS.get("torch-fp32") is builtin


def test_unreadable_entry_point_metadata_is_a_warning(monkeypatch, isolated_registries):
    def broken(**kw):
        raise OSError("metadata unreadable")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    with pytest.warns(PluginWarning, match="metadata unreadable"):
        assert len(load_entry_points()) == 1


def test_cli_prints_plugin_warnings_as_one_line(capsys):
    from profiler.cli import warning_printer

    others = []
    show = warning_printer(lambda *a: others.append(a))
    show(PluginWarning("sparsebench.plugins: distribution 'x' failed"), PluginWarning, "f.py", 1)
    assert capsys.readouterr().err == "sparsebench: warning: sparsebench.plugins: distribution 'x' failed\n"
    show(SparsebenchWarning("cache entry c damaged"), SparsebenchWarning, "f.py", 1)
    assert capsys.readouterr().err == "sparsebench: warning: cache entry c damaged\n"
    show(UserWarning("other"), UserWarning, "f.py", 1)
    assert len(others) == 1 and others[0][1] is UserWarning


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`sparsebench plugins --json | head -c 200`: the pipe closes under the writer."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "profiler.cli", "plugins", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert len(p.stdout.read(200)) == 200
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)  # 0 when the whole listing fit the pipe's buffer before the close, else 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_plugins_say_what_an_omitted_parameter_means(capsys):
    assert main(["plugins", "text-classification"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"label_column\s+str \| None\s+optional: \"label\"", text)
    assert re.search(r"model\s+str \| None\s+optional: all-MiniLM-L6-v2", text)


# -- a third-party plugin's mistakes: one clear line, the key and the plugin named -----------------


class BrokenInit(Accelerator):
    """Raises something other than ValueError while constructing (what, the config says)."""

    name = "broken-init"

    def __init__(self, error: str = "runtime"):
        if error == "type":
            raise TypeError("oops")
        if error == "exit":
            sys.exit(3)
        raise RuntimeError("boom in __init__")


class BareModule(Accelerator):
    """Returns the module itself instead of Prepared."""

    name = "bare-module"

    def prepare(self, model, example, settings):
        return copy.deepcopy(model).eval()


class ClashingFields(Accelerator):
    """Reports fields that are the row's own columns."""

    name = "clashing-fields"

    def prepare(self, model, example, settings):
        return Prepared(copy.deepcopy(model).eval(), {"accuracy": 0.123, "status": "great", "clash_ok": 1})


class NamedParam(Accelerator):
    name = "named-param"

    def __init__(self, name: str = "x"):
        self.label = name


def _tiny_run(tmp_path, accelerator: str, **overrides) -> tuple[int, list[dict]]:
    from profiler.results import read_results
    from tests.conftest import tiny_config
    from tests.faults_util import write_config

    cfg = tiny_config(pruners=[{"name": "none"}], accelerators=[{"name": accelerator}],
                      matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}, **overrides)
    status = main(["run", str(write_config(tmp_path / "c.toml", cfg)), "--output-dir", str(tmp_path / "runs")])
    runs = list((tmp_path / "runs").glob("*/results.jsonl")) if (tmp_path / "runs").exists() else []
    return status, (read_results(runs[0]).rows if runs else [])


def test_a_constructor_raising_anything_is_one_line_naming_the_key(isolated_registries, tmp_path, capsys):
    ACCELERATORS.register(BrokenInit, source="distribution 'x'")
    status, rows = _tiny_run(tmp_path, "broken-init")
    err = capsys.readouterr().err
    assert status == 2 and not rows and "Traceback" not in err
    who = "accelerators[0]: accelerator 'broken-init' (tests.test_plugins_cli.BrokenInit; distribution 'x') failed to construct"
    assert f"{who}: RuntimeError: boom" in err
    # a TypeError is no value the plugin rejects (the registry checked the types): named as its bug, as
    # is a sys.exit() in the constructor, which used to end sparsebench with status 3 and no word
    for error, what in (("type", "TypeError: oops"), ("exit", "SystemExit: 3")):
        with pytest.raises(ConfigError) as raised:
            parse_config({"tasks": [{"name": "tiny-synthetic"}], "pruners": [{"name": "none"}],
                          "accelerators": [{"name": "broken-init", "error": error}]})
        assert str(raised.value) == f"{who}: {what}"


def test_prepare_returning_a_bare_module_fails_the_cell_with_what_to_return(isolated_registries, tmp_path):
    ACCELERATORS.register(BareModule, source="distribution 'x'")
    status, (row,) = _tiny_run(tmp_path, "bare-module")
    assert row["status"] == "failed" and "must return accelerators.base.Prepared(module, fields)" in row["reason"]


def test_prepare_fields_named_like_row_columns_are_dropped_with_a_warning(isolated_registries, tmp_path, capsys):
    ACCELERATORS.register(ClashingFields, source="distribution 'x'")
    status, (row,) = _tiny_run(tmp_path, "clashing-fields")
    assert row["status"] == "ok" and row["accuracy"] != 0.123 and row["clash_ok"] == 1
    assert "['accuracy', 'status'] are row columns of their own" in capsys.readouterr().err


def test_a_parameter_called_name_is_refused_at_registration(isolated_registries):
    with pytest.raises(ValueError, match="parameter called 'name' could never be set"):
        ACCELERATORS.register(NamedParam)


def test_a_meter_whose_probe_raises_is_unavailable_before_any_work(isolated_registries, tmp_path, capsys):
    from profiler.meters.base import EnergyMeter
    from profiler.plugins import METERS

    class RaisingProbe(EnergyMeter):
        name = "raising-probe"

        def availability(self):
            raise RuntimeError("probe bug")

    METERS.register(RaisingProbe, source="distribution 'x'")
    status, rows = _tiny_run(tmp_path, "torch-fp32", meter={"name": "raising-probe"})
    err = capsys.readouterr().err
    assert status == 2 and not rows and "Traceback" not in err
    assert "'raising-probe' is unavailable here: availability() raised RuntimeError('probe bug')" in err


def test_a_plugin_calling_sys_exit_fails_its_cells_and_the_matrix_goes_on(isolated_registries, tmp_path, capsys):
    """sys.exit() inside prepare() or prune() used to end the whole run (status 3, no word, the other
    cells never run): each such cell is recorded failed naming the call, the other cells run."""
    from profiler.plugins import PRUNERS
    from pruners.base import Pruner

    class ExitingPrepare(Accelerator):
        name = "exiting-prepare"

        def prepare(self, model, example, settings) -> Prepared:
            sys.exit(3)

    class ExitingPrune(Pruner):
        name = "exiting-prune"

        def prune(self, model, task=None, progress=None):
            sys.exit(4)

    class ExitingModule(torch.nn.Module):  # exits on batches larger than `above` sequences
        def __init__(self, model, above):
            super().__init__()
            self.model, self.above = model, above

        def forward(self, **inputs):
            if inputs["input_ids"].shape[0] > self.above:
                sys.exit(5)
            return self.model(**inputs)

    class ExitingForward(Accelerator):
        """its module exits in the timed call (above = 0) or only in the accuracy pass (above = 1)"""
        name = "exiting-forward"

        def __init__(self, above: int = 0) -> None:
            self.above = above

        def prepare(self, model, example, settings) -> Prepared:
            return Prepared(ExitingModule(copy.deepcopy(model).eval(), self.above), {})

    ACCELERATORS.register(ExitingPrepare, source="distribution 'x'")
    ACCELERATORS.register(ExitingForward, source="distribution 'x'")
    PRUNERS.register(ExitingPrune, source="distribution 'x'")
    from profiler.results import read_results
    from tests.conftest import tiny_config
    from tests.faults_util import write_config

    cfg = tiny_config(pruners=[{"name": "none"}, {"name": "exiting-prune"}],
                      accelerators=[{"name": "torch-fp32"}, {"name": "exiting-prepare"},
                                    {"name": "exiting-forward", "above": [0, 1]}],
                      matrix={"batch_size": [1], "seq_len": [16], "threads": [1]})
    assert main(["run", str(write_config(tmp_path / "c.toml", cfg)), "--output-dir", str(tmp_path / "runs")]) == 0
    (results,) = (tmp_path / "runs").glob("*/results.jsonl")
    all_rows = read_results(results).rows
    rows = {(r["pruner"], r["accelerator"]): r for r in all_rows if r["accelerator"] != "exiting-forward"}
    assert len(all_rows) == 8 and rows["none", "torch-fp32"]["status"] == "ok"
    forward = {r["accelerator_params"]["above"]: r for r in all_rows
               if r["accelerator"] == "exiting-forward" and r["pruner"] == "none"}
    assert forward[0]["status"] == "failed" and "SystemExit(5) raised in accelerator 'exiting-forward'" in forward[0]["reason"]
    assert "SystemExit(5) raised in the prepared module's forward (accuracy pass)" in str(forward[1].get("reason"))
    assert rows["none", "exiting-prepare"]["status"] == "failed"
    assert "SystemExit(3) raised in accelerator 'exiting-prepare' prepare()" in rows["none", "exiting-prepare"]["reason"]
    for acc in ("torch-fp32", "exiting-prepare"):
        assert rows["exiting-prune", acc]["status"] == "failed"
        assert "SystemExit(4) raised in pruner 'exiting-prune' prune()" in rows["exiting-prune", acc]["reason"]


def test_a_pruner_returning_no_report_fails_its_cells_saying_what_to_return(isolated_registries, tmp_path):
    from profiler.plugins import PRUNERS
    from pruners.base import Pruner

    class NoReport(Pruner):
        name = "no-report"

        def prune(self, model, task=None, progress=None):
            return None

    PRUNERS.register(NoReport, source="distribution 'x'")
    from profiler.results import read_results
    from tests.conftest import tiny_config
    from tests.faults_util import write_config

    cfg = tiny_config(pruners=[{"name": "none"}, {"name": "no-report"}], accelerators=[{"name": "torch-fp32"}],
                      matrix={"batch_size": [1], "seq_len": [16], "threads": [1]})
    main(["run", str(write_config(tmp_path / "c.toml", cfg)), "--output-dir", str(tmp_path / "runs")])
    (results,) = (tmp_path / "runs").glob("*/results.jsonl")
    bad = [r for r in read_results(results).rows if r["pruner"] == "no-report"]
    assert bad and bad[0]["status"] == "failed"
    assert "prune() returned NoneType; it must prune the model in place and return a PruneReport" in bad[0]["reason"]


def test_an_accelerator_that_declares_no_precision_is_no_dense_fp32_reference():
    """A third-party fp16 or INT8 path that leaves compute_precision unset must not become the
    dense fp32 engine every savings factor is also taken against."""
    from accelerators.sparse_cpu import SparseCPU
    from accelerators.torch_fp32 import TorchFP32
    from profiler.identity import is_dense_fp32

    assert TinyAccelerator.compute_precision == "unknown"
    assert not is_dense_fp32("none", "tiny-acc", TinyAccelerator.compute_precision)
    assert TorchFP32.compute_precision == SparseCPU.compute_precision == "fp32"
    assert is_dense_fp32("none", "sparse-cpu", SparseCPU.compute_precision)


def test_a_plugin_the_registry_refuses_is_skipped_with_a_warning(monkeypatch, isolated_registries):
    """A constructor parameter called 'name' stops that entry point only, never sparsebench."""
    _fake_group(monkeypatch, FakeEntryPoint("named-param", NamedParam), FakeEntryPoint("tiny-acc", TinyAccelerator))
    with pytest.warns(PluginWarning, match="parameter called 'name' could never be set"):
        (problem,) = load_entry_points()
    assert "'sparsebench-tiny'" in problem and "'named-param'" in problem and problem.endswith("skipped")
    assert "named-param" not in ACCELERATORS and "tiny-acc" in ACCELERATORS


def test_a_meter_reading_the_wrong_type_leaves_energy_unavailable_and_the_matrix_runs(isolated_registries, tmp_path):
    import time

    from profiler.meters.base import EnergyMeter
    from profiler.plugins import METERS

    class FloatReading(EnergyMeter):
        name = "float-reading"

        def availability(self):
            return True, ""

        def read(self):
            return time.monotonic()  # not a Reading

    METERS.register(FloatReading, source="distribution 'x'")
    status, (row,) = _tiny_run(tmp_path, "torch-fp32", meter={"name": "float-reading"})
    assert status == 0 and row["status"] == "ok" and row["energy_method"] == "unavailable"
    assert "meter 'float-reading': read() returned float" in row["energy_reason"]


def _pruner_run(tmp_path, pruner_cls) -> list[dict]:
    """A tiny run of the dense model and ``pruner_cls`` (registered for the test) on torch-fp32."""
    from profiler.plugins import PRUNERS
    from profiler.results import read_results
    from tests.conftest import tiny_config
    from tests.faults_util import write_config

    PRUNERS.register(pruner_cls, source="distribution 'x'")
    cfg = tiny_config(pruners=[{"name": "none"}, {"name": pruner_cls.name}], accelerators=[{"name": "torch-fp32"}],
                      matrix={"batch_size": [1], "seq_len": [16], "threads": [1]})
    main(["run", str(write_config(tmp_path / "c.toml", cfg)), "--output-dir", str(tmp_path / "runs")])
    (results,) = (tmp_path / "runs").glob("*/results.jsonl")
    return [r for r in read_results(results).rows if r["pruner"] == pruner_cls.name]


def _cached_pruned(name: str) -> list:
    import os
    from pathlib import Path

    return list((Path(os.environ["SPARSEBENCH_CACHE"]) / "pruned").glob(f"tiny-synthetic-{name}-*"))


def test_a_pruners_sparsity_claim_is_recounted_from_its_model(isolated_registries, tmp_path):
    from pruners.base import Pruner, prunable_linears, sparsity_report

    class Boastful(Pruner):
        name = "boastful"

        def prune(self, model, task=None, progress=None):
            for lin in prunable_linears(model).values():
                lin.weight.data[:, ::2] = 0
            rep = sparsity_report(model)
            rep.prunable_zeros = rep.prunable_numel  # claims every prunable weight is zero
            return rep

    (row,) = _pruner_run(tmp_path, Boastful)
    assert row["status"] == "ok" and row["sparsity_prunable"] == pytest.approx(0.5, abs=0.01)
    assert "sparsity_prunable claimed 1.0, counted 0.5" in row["sparsity_flag"]
    (tmp_path / "second").mkdir()
    (again,) = _pruner_run(tmp_path / "second", Boastful)  # from the cache: the count and the flag stay
    assert again["sparsity_prunable"] == row["sparsity_prunable"] and again["sparsity_flag"] == row["sparsity_flag"]


def test_a_pruner_changing_shapes_fails_its_cells_and_is_not_cached(isolated_registries, tmp_path):
    from torch import nn

    from pruners.base import Pruner, prunable_linears, sparsity_report

    class HalveFFN(Pruner):
        name = "halve-ffn"

        def prune(self, model, task=None, progress=None):
            for name, lin in prunable_linears(model, ("ffn_in",)).items():
                parent, attr = name.rsplit(".", 1)
                setattr(model.get_submodule(parent), attr, nn.Linear(lin.in_features, lin.out_features // 2))
            return sparsity_report(model)

    (row,) = _pruner_run(tmp_path, HalveFFN)
    assert row["status"] == "failed" and "pruner 'halve-ffn' changed the model's parameter names or shapes" in row["reason"]
    assert "keeps every name and shape" in row["reason"] and not _cached_pruned("halve-ffn")


def test_a_pruner_leaving_torch_prune_hooks_fails_saying_call_prune_remove(isolated_registries, tmp_path):
    import torch.nn.utils.prune as torch_prune

    from pruners.base import Pruner, prunable_linears, sparsity_report

    class Hooked(Pruner):
        name = "hooked"

        def prune(self, model, task=None, progress=None):
            for lin in prunable_linears(model).values():
                torch_prune.l1_unstructured(lin, "weight", amount=0.5)
            return sparsity_report(model)

    (row,) = _pruner_run(tmp_path, Hooked)
    assert row["status"] == "failed"
    assert "pruner 'hooked' left torch.nn.utils.prune reparametrization (call prune.remove" in row["reason"]
    assert not _cached_pruned("hooked")


class NoModule(Accelerator):
    name = "no-module"

    def prepare(self, model, example, settings):
        return Prepared(None, {})


class ListFields(Accelerator):
    name = "list-fields"

    def prepare(self, model, example, settings):
        return Prepared(copy.deepcopy(model).eval(), [("x", 1)])


class WrongLogits(Accelerator):
    name = "wrong-logits"

    def prepare(self, model, example, settings):
        import torch

        class M(torch.nn.Module):
            def forward(self, input_ids, **kw):
                return torch.zeros(input_ids.shape[0], 7, 3)

        return Prepared(M(), {})


@pytest.mark.parametrize("cls, says", [
    (NoModule, "accelerator 'no-module': prepare() returned Prepared whose module is NoneType; it must be the "
               "runnable torch.nn.Module"),
    (ListFields, "accelerator 'list-fields': prepare() returned Prepared whose fields are list; they must be a dict"),
    (WrongLogits, "accelerator 'wrong-logits': the prepared module returned logits of shape [1, 7, 3]; it must "
                  "return logits of shape (batch, num_labels) = [1, 2]"),
])
def test_a_malformed_prepared_or_logits_fail_the_cell_naming_the_contract(isolated_registries, tmp_path, cls, says):
    ACCELERATORS.register(cls, source="distribution 'x'")
    status, (row,) = _tiny_run(tmp_path, cls.name)
    assert row["status"] == "failed" and says in row["reason"]


class RunnerFieldClash(Accelerator):
    name = "runner-field-clash"

    def prepare(self, model, example, settings):
        return Prepared(copy.deepcopy(model).eval(), {
            "accuracy_padding": "none", "kernel_variant_used": "amx", "metric_accuracy": 1.0, "cell_id": "x",
            "energy_meter": "mine", "latency_savings_factor": 99.0, "obj": object(), "fine": [1, {"a": 2}]})


def test_prepare_fields_the_runner_writes_are_dropped_and_non_json_refused(isolated_registries, tmp_path, capsys):
    ACCELERATORS.register(RunnerFieldClash, source="distribution 'x'")
    status, (row,) = _tiny_run(tmp_path, "runner-field-clash")
    err = capsys.readouterr().err
    assert row["status"] == "ok" and row["fine"] == [1, {"a": 2}] and "obj" not in row
    assert row["accuracy_padding"].startswith("dynamic") and row["metric_accuracy"] == row["accuracy"]
    assert "kernel_variant_used" not in row and row["cell_id"] != "x" and row["energy_meter"] == "estimate"
    assert row.get("latency_savings_factor") != 99.0
    assert ("['accuracy_padding', 'cell_id', 'energy_meter', 'kernel_variant_used', 'latency_savings_factor', "
            "'metric_accuracy'] are row columns of their own; dropped") in err
    assert "prepare() fields ['obj'] are not JSON values" in err


def test_a_prepare_that_mutates_its_model_fails_and_later_cells_get_it_intact(isolated_registries, tmp_path):
    import torch

    class Mutates(Accelerator):
        name = "mutates"

        def prepare(self, model, example, settings):
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
            return Prepared(model, {})

    ACCELERATORS.register(Mutates, source="distribution 'x'")
    from profiler.results import read_results
    from tests.conftest import tiny_config
    from tests.faults_util import write_config

    # mutates first: in the group, torch-fp32 and int8-dynamic are prepared after it from the same model
    cfg = tiny_config(pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": 0.5}],
                      accelerators=[{"name": "mutates"}, {"name": "torch-fp32"}, {"name": "int8-dynamic"}],
                      matrix={"batch_size": [1], "seq_len": [16], "threads": [1]})
    main(["run", str(write_config(tmp_path / "c.toml", cfg)), "--output-dir", str(tmp_path / "runs")])
    (results,) = (tmp_path / "runs").glob("*/results.jsonl")
    rows = read_results(results).rows
    bad = [r for r in rows if r["accelerator"] == "mutates"]
    assert len(bad) == 2 and all(r["status"] == "failed" for r in bad)
    assert all("prepare changed the model it was given" in r["reason"] and "reloaded from the cache" in r["reason"]
               for r in bad)
    good = [r for r in rows if r["accelerator"] != "mutates"]
    assert len(good) == 4 and all(r["status"] == "ok" and not r.get("collapsed") for r in good)
    dense = next(r for r in good if r["pruner"] == "none" and r["accelerator"] == "torch-fp32")
    assert dense["sparsity_all_params"] < 0.01  # not the zeroed model
