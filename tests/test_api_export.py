"""sparsebench.profile (the Python API) and `sparsebench export` round trips on a tiny model."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import sparsebench
from profiler.cli import main
from profiler.errors import ConfigError
from profiler.results import read_results
from tests.tiny_family import save_tiny_model, sentences

FAST = {"warmup_iters": 1, "min_iters": 3, "min_seconds": 0.01, "max_seconds": 1.0, "idle_seconds": 0,
        "schedule": "sequential"}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One API run: dense and 90 % magnitude under torch-fp32 and sparse-cpu, a regression head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("api")
    folder = save_tiny_model(root / "model", "bert", num_labels=1)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    data = pd.DataFrame([{"a": a, "b": b, "score": 0.5 * len(a.split()) % 5} for a, b, _ in sentences(24)])
    df = sparsebench.profile(
        model, tok, data, text_column="a", text_pair_column="b", label_column="score", metric="spearman",
        pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": 0.9}],
        accelerators=[{"name": "torch-fp32"}, {"name": "sparse-cpu", "calibrate": False}],
        batch_size=[2], seq_len=[16], threads=[1], measure=FAST, meter={"name": "estimate"},
        out=root / "run", cache_dir=root / "cache")
    return root, df


def test_profile_returns_exactly_the_rows_of_results_jsonl(profiled):
    root, df = profiled
    rows = read_results(root / "run" / "results.jsonl").rows
    assert len(df) == len(rows) == 4
    pd.testing.assert_frame_equal(df, pd.DataFrame(rows))
    assert list(df["cell_id"]) == [r["cell_id"] for r in rows]
    assert set(df["status"]) == {"ok"}, df["reason"].tolist()
    assert set(df["metric_name"]) == {"spearman"}
    assert (df["accuracy"] == df["metric_spearman"]).all() and df["metric_pearson"].notna().all()
    assert (root / "run" / "report.html").is_file()  # a kept run directory gets its page


def test_profile_without_out_leaves_nothing_and_takes_list_of_dicts(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_tiny_model(tmp_path / "m", "distilbert")
    data = [{"text": a, "label": y} for a, _, y in sentences(12)]
    df = sparsebench.profile(AutoModelForSequenceClassification.from_pretrained(folder),
                             AutoTokenizer.from_pretrained(folder), data, pruners=["none"], accelerators=["torch-fp32"],
                             batch_size=[1], seq_len=[8], measure=FAST, meter={"name": "estimate"})
    assert list(df["status"]) == ["ok"] and list(df["metric_name"]) == ["accuracy"]
    with pytest.raises(ConfigError, match=r"pruners: each entry is a dict like .* or a plugin name, got 3"):
        sparsebench.profile(str(folder), None, data, pruners=[3])


def test_profile_warns_when_the_matrix_has_no_baseline_cell(tmp_path, recwarn):
    """No pruner none under torch-fp32: no savings factor, no accuracy kept; the caller is told."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_tiny_model(tmp_path / "m", "bert")
    model, tok = AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    data = [{"text": a, "label": y} for a, _, y in sentences(12)]
    kw = dict(batch_size=[1], seq_len=[8], measure=FAST, meter={"name": "estimate"})
    sparsebench.profile(model, tok, data, **kw)
    assert not [w for w in recwarn if "no pruner 'none'" in str(w.message)]
    with pytest.warns(UserWarning, match="no pruner 'none' with accelerator 'torch-fp32'"):
        df = sparsebench.profile(model, tok, data, accelerators=[{"name": "sparse-cpu", "calibrate": False}], **kw)
    assert list(df["status"]) == ["ok"]
    assert df["latency_savings_factor"].isna().all()  # the column is there, empty, without a baseline


def test_profile_bad_input_writes_nothing(tmp_path):
    folder = save_tiny_model(tmp_path / "m", "bert")
    with pytest.raises(ConfigError, match="outside the model head's range"):
        sparsebench.profile(str(folder), None, [{"text": "good movie", "label": 7}], out=tmp_path / "run",
                            meter={"name": "estimate"})
    assert not (tmp_path / "run").exists()
    (tmp_path / "empty").mkdir()  # an empty folder given as out stays empty
    with pytest.raises(ConfigError, match="outside the model head's range"):
        sparsebench.profile(str(folder), None, [{"text": "good movie", "label": 7}], out=tmp_path / "empty",
                            meter={"name": "estimate"})
    assert list((tmp_path / "empty").iterdir()) == []


def test_profile_refuses_an_out_folder_that_holds_something(profiled, tmp_path):
    root, _ = profiled
    before = (root / "run" / "results.jsonl").read_bytes()
    for out, why in ((root / "run", "is not empty"), (root / "run" / "results.jsonl", "is a file")):
        with pytest.raises(ConfigError, match=why):
            sparsebench.profile(str(root / "run" / "inputs" / "model"), None, [{"text": "good", "label": 1}],
                                out=out, meter={"name": "estimate"})
    assert (root / "run" / "results.jsonl").read_bytes() == before


def test_profile_names_its_arguments_in_errors_and_takes_a_scalar_axis(tmp_path):
    folder = save_tiny_model(tmp_path / "m", "bert")
    with pytest.raises(ConfigError, match=r"eval_data.*column\(s\) \['text'\] missing") as exc:
        sparsebench.profile(str(folder), None, [{"review": "good", "label": 1}], meter={"name": "estimate"})
    assert "eval.jsonl" not in str(exc.value)
    with pytest.raises(ConfigError, match="batch_size: expected an integer or a list of integers"):
        sparsebench.profile(str(folder), None, [{"text": "good", "label": 1}], batch_size="8")
    df = sparsebench.profile(str(folder), None, [{"text": a, "label": y} for a, _, y in sentences(4)], batch_size=1,
                             seq_len=8, measure=FAST, meter={"name": "estimate"})
    assert list(df["batch_size"]) == [1] and list(df["seq_len"]) == [8]
    import numpy as np  # numpy's integers are integers: np.int64(2), np.arange(...)

    df = sparsebench.profile(str(folder), None, [{"text": a, "label": y} for a, _, y in sentences(4)],
                             batch_size=np.int64(2), seq_len=np.arange(8, 9), measure=FAST, meter={"name": "estimate"})
    assert list(df["batch_size"]) == [2] and list(df["seq_len"]) == [8]
    with pytest.raises(ConfigError, match="batch_size"):  # a 0-d array is one value, checked as any other
        sparsebench.profile(str(folder), None, [{"text": "good", "label": 1}], batch_size=np.array(0.5))


def test_profile_takes_one_pruner_accelerator_or_meter_without_a_list(tmp_path):
    """A lone name or dict is one entry: not its letters, not its keys."""
    folder = save_tiny_model(tmp_path / "m", "bert")
    data = [{"text": a, "label": y} for a, _, y in sentences(4)]
    df = sparsebench.profile(str(folder), None, data, pruners="none", accelerators={"name": "torch-fp32"},
                             batch_size=1, seq_len=8, measure=FAST, meter="estimate")
    assert list(df["status"]) == ["ok"], df["reason"].tolist()
    assert list(df["pruner"]) == ["none"] and list(df["accelerator"]) == ["torch-fp32"]
    with pytest.raises(ConfigError, match=r"^pruners\[0\]\.name: unknown pruner 'magnitud';"):
        sparsebench.profile(str(folder), None, data, pruners="magnitud")
    with pytest.raises(ConfigError, match=r"^accelerators\[0\]\.name: unknown accelerator 'torch-fp64';"):
        sparsebench.profile(str(folder), None, data, accelerators={"name": "torch-fp64"})


@pytest.mark.parametrize("kw, match", [
    ({"pruners": 3}, r"^pruners: expected a list of dicts like \{'name': 'magnitude', 'sparsity': 0.5\} or plugin "
                     r"names \(or one of them\), got 3"),
    ({"accelerators": None}, r"^accelerators: expected a list of dicts like \{'name': 'torch-fp32'\} or plugin names"),
    ({"measure": "fast"}, r"^measure: expected a dict of measurement settings like \{'min_iters': 3\} "
                          r"\(keys: warmup_iters, min_iters, .*\), got 'fast'"),
    ({"measure": ["min_iters", 3]}, r"^measure: expected a dict .* got \['min_iters', 3\]"),
    ({"meter": 3}, r"^meter: expected a dict like \{'name': 'estimate'\} or a meter name \(.*auto.*estimate.*\), got 3"),
    ({"meter": ["auto"]}, r"^meter: expected a dict like .*, got \['auto'\]"),
    ({"eval_data": None}, r"^eval_data: expected a list of dicts \(one per example\), a pandas DataFrame or a "
                          r"datasets.Dataset, got NoneType"),
    ({"eval_data": "good movie"}, r"^eval_data: expected a list of dicts .* got str"),
    ({"eval_data": {"text": "good", "label": 1}}, r"^eval_data: expected a list of dicts .* got dict"),
    ({"eval_data": 5}, r"^eval_data: expected a list of dicts .* got int"),
    ({"train_data": "train.jsonl"}, r"^train_data: expected a list of dicts .* got str"),
])
def test_profile_argument_of_the_wrong_type_is_a_config_error_naming_it(tmp_path, kw, match):
    kw = {"eval_data": [{"text": "good", "label": 1}], **kw}
    with pytest.raises(ConfigError, match=match):
        sparsebench.profile(str(tmp_path / "no-model-needed"), None, kw.pop("eval_data"), out=tmp_path / "run", **kw)
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_profile_fits_max_length_to_a_model_with_fewer_positions(tmp_path):
    """A model with 64 position embeddings (under the task's default max_length 128) runs with
    max_length left out, taking 64; max_length is the caller's argument, named as such when it is too
    long."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = save_tiny_model(tmp_path / "m", "bert")
    config = AutoConfig.from_pretrained(folder)
    config.max_position_embeddings = 64
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder, safe_serialization=True)
    data = [{"text": a, "label": y} for a, _, y in sentences(8)]
    kw = dict(pruners=["none"], accelerators=["torch-fp32"], batch_size=[1], seq_len=[32], measure=FAST,
              meter={"name": "estimate"})
    df = sparsebench.profile(str(folder), None, data, **kw)
    assert list(df["status"]) == ["ok"], df["reason"].tolist()
    assert df["task_params"][0]["max_length"] == 64
    df = sparsebench.profile(str(folder), None, data, max_length=16, **kw)
    assert list(df["status"]) == ["ok"] and df["task_params"][0]["max_length"] == 16
    with pytest.raises(ConfigError, match=r"^max_length: 128 is longer than its model takes \(64 positions\); "
                                          r"set max_length <= 64$"):
        sparsebench.profile(str(folder), None, data, max_length=128, **kw)


def test_profile_names_a_model_object_not_the_folder_it_was_saved_to(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    folder = save_tiny_model(tmp_path / "m", "bert")
    encoder = AutoModel.from_pretrained(folder)  # no classification head
    with pytest.raises(ConfigError, match=r"model: the model object has no sequence-classification head") as exc:
        sparsebench.profile(encoder, AutoTokenizer.from_pretrained(folder), [{"text": "good", "label": 1}],
                            meter="estimate")
    assert "sparsebench-" not in str(exc.value) and "inputs" not in str(exc.value)
    with pytest.raises(ConfigError, match="model: give a transformers model object and its tokenizer"):
        sparsebench.profile(encoder, None, [{"text": "good", "label": 1}])


def test_profile_bad_tokenizer_out_cache_dir_or_missing_train_data_is_a_config_error_naming_it(tmp_path):
    """Each one a ConfigError naming the argument before anything is written, not an AttributeError,
    TypeError or OSError from deep inside."""
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification

    folder = save_tiny_model(tmp_path / "m", "bert")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    rows = [{"text": "good", "label": 1}]
    with pytest.raises(ConfigError, match=r"^tokenizer: expected the model's tokenizer object .*, "
                                          r"got str 'bert-base-uncased'$"):
        sparsebench.profile(model, "bert-base-uncased", rows, out=tmp_path / "run", meter="estimate")
    assert not (tmp_path / "run").exists()
    (tmp_path / "afile").write_text("")
    outs = [(5, r"^out: expected a folder path \(str or pathlib.Path\), got int 5$"),
            (tmp_path / "afile" / "run", r"^out: .*afile/run cannot be created: .*afile is a file, not a folder$")]
    if Path("/proc").is_dir():  # a folder nobody, root included, can create files in
        outs.append(("/proc/nope/run", r"^out: /proc/nope/run is not writable: "))
    for out, match in outs:
        with pytest.raises(ConfigError, match=match):
            sparsebench.profile(str(folder), None, rows, out=out, meter="estimate")
    with pytest.raises(ConfigError, match=r"^cache_dir: expected a folder path \(str or pathlib.Path\), got int 5$"):
        sparsebench.profile(str(folder), None, rows, out=tmp_path / "run", cache_dir=5, meter="estimate")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"finetune_steps > 0 needs train_data$") as exc:
        sparsebench.profile(str(folder), None, rows, finetune_steps=5, meter="estimate")
    assert "train_file" not in str(exc.value)


def test_profile_rejects_rows_whose_text_is_not_a_string(tmp_path):
    """None, a list or pandas' NA is not evaluated as the text "None", "['good']" or "<NA>"."""
    folder = save_tiny_model(tmp_path / "m", "bert")
    good = [{"text": "good", "label": 1}]
    for rows, arg, holds in (([{"text": None, "label": 1}], "eval_data", "null"),
                             (good + [{"text": ["good"], "label": 0}], "eval_data", r"a list \['good'\]"),
                             ([{"text": pd.NA, "label": 1}], "eval_data", "null"),
                             ([{"text": "good", "label": 1}] + [{"text": None, "label": 0}], "train_data", "null")):
        kw = {"train_data": rows, "eval_data": good} if arg == "train_data" else {"eval_data": rows}
        with pytest.raises(ConfigError, match=rf"^tasks\[0\]: {arg}: text_column 'text' \(row {len(rows)}\) holds "
                                              rf"{holds}, not text; every value of a text column must be a string$"):
            sparsebench.profile(str(folder), None, kw.pop("eval_data"), meter="estimate", **kw)


def test_export_round_trip_identical_logits_and_zero_counts(profiled, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root, df = profiled
    cell = df[(df["pruner"] == "magnitude") & (df["accelerator"] == "sparse-cpu")]["cell_id"].iloc[0]
    out = tmp_path / "exported"
    assert main(["export", str(root / "run"), "--cell", cell, "--out", str(out), "--cache-dir", str(root / "cache"),
                 "--format", "onnx"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "model.onnx").is_file()
    info = json.loads((out / "sparsity.json").read_text())
    assert info["pruner"]["name"] == "magnitude" and info["sparsity_prunable"] == pytest.approx(0.9)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    for name, layer in info["per_layer"].items():
        assert int((model.get_submodule(name).weight == 0).sum()) == layer["zeros"]
    dense = AutoModelForSequenceClassification.from_pretrained(root / "run" / "inputs" / "model").eval()
    assert not any(k.endswith("_orig") or "mask" in k for k in model.state_dict())
    batch = tok(["good movie", "awful plot"], ["fun", "dull"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert model(**batch).logits.shape == dense(**batch).logits.shape == (2, 1)


def test_export_without_cache_dir_uses_the_models_the_run_recorded(profiled, tmp_path, monkeypatch):
    """Without --cache-dir, export takes the run's own model cache (its manifest says where), not
    the default one, where it would fine-tune and prune the model again."""
    root, df = profiled
    default = tmp_path / "default-cache"
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(default))
    cell = df[(df["pruner"] == "magnitude") & (df["accelerator"] == "sparse-cpu")]["cell_id"].iloc[0]
    assert main(["export", str(root / "run"), "--cell", cell, "--out", str(tmp_path / "exported")]) == 0
    assert not default.exists() or not any(default.rglob("*.safetensors"))


def test_export_unknown_cell_is_a_clear_error(profiled, tmp_path, capsys):
    root, _ = profiled
    assert main(["export", str(root / "run"), "--cell", "zzzz", "--out", str(tmp_path / "o")]) == 2
    assert "not a cell of this run" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    cell = read_results(root / "run" / "results.jsonl").rows[0]["cell_id"]
    (tmp_path / "afile").write_text("")
    assert main(["export", str(root / "run"), "--cell", cell, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--cell", cell, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--resume" not in err
    # an --out that cannot be created: one line, exit 2, nothing left behind
    assert main(["export", str(root / "run"), "--cell", cell, "--out", str(tmp_path / "afile" / "o")]) == 2
    assert "--out:" in capsys.readouterr().err and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_export_without_the_formats_package_fails_before_any_model_work(profiled, tmp_path, capsys, monkeypatch):
    import sys

    from profiler.runner import Runner

    root, _ = profiled
    cell = read_results(root / "run" / "results.jsonl").rows[0]["cell_id"]
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: its import raises ImportError
    monkeypatch.setattr(Runner, "pruned", lambda *a, **k: pytest.fail("no model work before the check"))
    assert main(["export", str(root / "run"), "--cell", cell, "--out", str(tmp_path / "o"), "--format", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "--format openvino: package 'openvino' is not installed" in err and "pip install" in err
    assert not (tmp_path / "o").exists()


def test_a_failed_export_empties_but_keeps_an_out_folder_the_user_made(profiled, tmp_path, monkeypatch):
    """--out may be an existing empty folder: a failure mid-export removes what it wrote, not the
    folder; a folder the export created itself goes."""
    from profiler.export import export_cell

    root, _ = profiled
    cell = read_results(root / "run" / "results.jsonl").rows[0]["cell_id"]

    def broken(out, model, example):
        raise RuntimeError("round trip differs")

    monkeypatch.setattr("profiler.export.check_round_trip", broken)
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(RuntimeError, match="round trip"):
        export_cell(root / "run", cell, mine, cache_dir=root / "cache")
    assert mine.is_dir() and list(mine.iterdir()) == []
    with pytest.raises(RuntimeError, match="round trip"):
        export_cell(root / "run", cell, tmp_path / "new", cache_dir=root / "cache")
    assert not (tmp_path / "new").exists()


def test_export_of_a_cell_whose_pruning_fails_is_one_line_exit_1(profiled, tmp_path, monkeypatch, capsys):
    from profiler.runner import Runner

    root, _ = profiled
    cell = read_results(root / "run" / "results.jsonl").rows[0]["cell_id"]

    def broken(*a, **k):
        raise ValueError("scores contain NaN; cannot rank them")

    monkeypatch.setattr(Runner, "pruned", broken)
    assert main(["export", str(root / "run"), "--cell", cell, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "its model cannot be built" in err and "scores contain NaN" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_export_openvino_ir(profiled, tmp_path):
    pytest.importorskip("openvino")
    root, df = profiled
    cell = df[df["pruner"] == "magnitude"]["cell_id"].iloc[0]
    out = tmp_path / "ov"
    assert main(["export", str(root / "run"), "--cell", cell[:8], "--out", str(out), "--cache-dir", str(root / "cache"),
                 "--format", "openvino"]) == 0
    assert (out / "openvino" / "model.xml").is_file() and (out / "config.json").is_file()


def test_records_of_accepts_lists_dataframes_and_dataset_like_objects():
    from sparsebench.api import records_of

    class FakeDataset:  # what datasets.Dataset offers (the library is optional)
        column_names = ["text", "label"]

        def to_list(self):
            return [{"text": "good", "label": 1}]

    rows = [{"text": "good", "label": 1}]
    assert records_of(rows, "x") == rows == records_of(pd.DataFrame(rows), "x") == records_of(FakeDataset(), "x")
    with pytest.raises(ConfigError, match="^eval_data: no rows"):
        records_of([], "eval_data")
    with pytest.raises(ConfigError, match=r"^eval_data: expected a list of dicts .*; got a list holding tuple items"):
        records_of([("good", 1)], "eval_data")
