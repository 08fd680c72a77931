"""scripts/recipe_table.py: the recipes table from run directories."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

recipe_table = load_script("recipe_table")


def _run(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_table_reads_accuracy_kept_and_training_from_runs(tmp_path, capsys):
    training = {"steps": 3000, "steps_per_s": 1.5, "wall_time_s": 2000.0, "precision": "bf16"}
    a = _run(tmp_path, "recipe-a", [
        {"pruner": "none", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.9},
        {"pruner": "obs", "pruner_label": "obs 0.9 1x4 KD", "accelerator": "torch-fp32", "status": "ok",
         "accuracy": 0.81, "pruner_params": {"sparsity": 0.9, "structure": "1x4"}, "pruner_training": training,
         "collapsed": False},
        {"pruner": "obs", "pruner_label": "obs 0.9 1x4 KD", "accelerator": "sparse-int8", "status": "ok",
         "accuracy": 0.72, "pruner_params": {"sparsity": 0.9, "structure": "1x4"}, "pruner_training": training,
         "collapsed": False}])
    b = _run(tmp_path, "recipe-b", [
        {"pruner": "none", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.8},
        {"pruner": "movement", "pruner_label": "movement 0.95 soft KD", "accelerator": "torch-fp32", "status": "ok",
         "accuracy": 0.5, "pruner_params": {"sparsity": 0.95, "variant": "soft"}, "collapsed": True},
        {"pruner": "gmp", "pruner_label": "gmp 0.95 ema 0.999", "accelerator": "torch-fp32", "status": "ok",
         "accuracy": 0.7, "pruner_params": {"sparsity": 0.95}, "collapsed": False,
         "pruner_weight_average": {"decay": 0.999, "from_step": 10, "steps_averaged": 5, "accuracy_last_weights": 0.6875}}])
    (tmp_path / "running").mkdir()  # a run without results yet is skipped
    recs = recipe_table.records([b, a, tmp_path / "running"])
    assert [r["pruner"] for r in recs] == ["obs", "gmp", "movement"]  # 1x4 targets first
    obs, gmp, mov = recs
    assert obs["accuracy"] == {"torch-fp32": 0.81, "sparse-int8": 0.72} and obs["dense_accuracy"] == 0.9
    assert mov["collapsed"] and mov["structure"] == "unstructured" and mov["dense_accuracy"] == 0.8
    table = recipe_table.markdown(recs)
    assert "| 90% 1x4 | obs | 0.8100 | 90.0 % | 0.7200 | 80.0 % | 3000 | 33 min | 1.5 | recipe-a |" in table
    assert "movement (soft) — collapsed" in table and "62.5 %" in table
    assert "| gmp (ema 0.999; last weights 0.6875 fp32) | 0.7000 | 87.5 % |" in table
    recipe_table.main([str(a), "--out", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text())[0]["run"] == "recipe-a"
    with pytest.raises(SystemExit):
        recipe_table.main([str(tmp_path / "running")])


def test_seed_groups_pool_models_that_differ_only_in_seed(tmp_path, capsys):
    def run(name: str, dense: float, int8: float, **params) -> Path:
        p = {"sparsity": 0.8, "structure": "1x4", "steps": 100, **params}
        return _run(tmp_path, name, [
            {"pruner": "none", "accelerator": "torch-fp32", "status": "ok", "accuracy": dense},
            {"pruner": "gmp", "pruner_label": "gmp", "accelerator": "sparse-int8", "status": "ok",
             "accuracy": int8, "pruner_params": p}])
    # seed 1 from an older run that did not record `augment`: counts as the default (0.0)
    runs = [run("s1", 0.9, 0.81, seed=1), run("s2", 0.8, 0.76, seed=2, augment=0.0),
            run("aug", 0.9, 0.9, seed=1, augment=0.5)]
    groups = recipe_table.seed_groups(recipe_table.records(runs))
    assert len(groups) == 2
    plain, aug = sorted(groups, key=lambda g: g["params"]["augment"])
    assert plain["seeds"] == [1, 2] and "seed" not in plain["params"] and aug["seeds"] == [1]
    stats = plain["pct_of_dense"]["sparse-int8"]
    assert stats["n"] == 2 and stats["min"] == pytest.approx(90.0) and stats["max"] == pytest.approx(95.0)
    assert stats["mean"] == pytest.approx(92.5) and "torch-fp32" not in plain["pct_of_dense"]
    table = recipe_table.seeds_markdown(groups)
    assert "| 80% 1x4 | gmp | augment = 0.0 | 1, 2 | 92.5 % | 90.0–95.0 % | — | — |" in table
    assert "| augment = 0.5 | 1 | 100.0 % | 100.0–100.0 % |" in table
    recipe_table.main([*map(str, runs), "--seeds", "--out", str(tmp_path / "s.json")])
    out = json.loads((tmp_path / "s.json").read_text())
    assert len(out["models"]) == 3 and [g["seeds"] for g in out["seed_groups"]] == [[1, 2], [1]]
    assert "90.0–95.0 %" in capsys.readouterr().out


def test_torn_lines_missing_dirs_and_repeats_are_reported_not_fatal(tmp_path, capsys):
    row = {"pruner": "gmp", "pruner_label": "gmp", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.8,
           "pruner_params": {"sparsity": 0.5, "seed": 1}}
    run = _run(tmp_path, "r", [{"pruner": "none", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.9},
                               {"pruner": "gmp", "pruner_label": "no params", "accelerator": "torch-fp32",
                                "status": "ok", "accuracy": 0.7}])
    with (run / "results.jsonl").open("a") as f:
        f.write("[]\n" + json.dumps(row) + "\n" + json.dumps(row)[:20])  # not an object; a torn last line
    recs = recipe_table.records([run, run, tmp_path / "missing"])
    assert len(recs) == 2  # the run counted once; the two good pruned models read
    err = capsys.readouterr().err
    assert "results.jsonl:3: not a JSON object" in err and "results.jsonl:5: not a JSON object" in err
    assert "missing: not a directory" in err
    assert "| — unstructured | gmp | 0.7000 |" in recipe_table.markdown(recs)  # a row without its params
    assert [g["seeds"] for g in recipe_table.seed_groups(recs)] == [[0], [1]]  # unrecorded: the default seed


def test_the_engine_column_reads_the_plain_cell_beside_variant_cells(tmp_path):
    """A run with several sparse-int8 cells (one per fallback): the table shows the plainly
    labelled one whatever the row order, and each variant stays in the record under its label."""
    common = {"pruner": "obs", "pruner_label": "obs 0.8 1x4", "status": "ok", "pruner_params": {"sparsity": 0.8}}
    run = _run(tmp_path, "r", [
        {"pruner": "none", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.9},
        {**common, "accelerator": "sparse-int8", "accelerator_label": "sparse-int8 fallback torch-int8", "accuracy": 0.88},
        {**common, "accelerator": "sparse-int8", "accelerator_label": "sparse-int8", "accuracy": 0.89},
        {**common, "accelerator": "sparse-int8", "accelerator_label": "sparse-int8 fallback fp32", "accuracy": 0.87}])
    (rec,) = recipe_table.records([run])
    assert rec["accuracy"]["sparse-int8"] == 0.89
    assert rec["accuracy"]["sparse-int8 fallback torch-int8"] == 0.88
    assert rec["accuracy"]["sparse-int8 fallback fp32"] == 0.87


def test_engines_table_gives_each_engine_against_torch_fp32_on_the_same_model(tmp_path, capsys):
    run = _run(tmp_path, "peers-accuracy", [
        {"pruner": "none", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.88},
        {"pruner": "none", "accelerator": "openvino", "accelerator_label": "openvino int8", "status": "ok", "accuracy": 0.8835},
        {"pruner": "gmp", "pruner_label": "gmp 0.9 KD", "accelerator": "torch-fp32", "status": "ok", "accuracy": 0.85},
        {"pruner": "gmp", "pruner_label": "gmp 0.9 KD", "accelerator": "sparse-int8", "status": "ok", "accuracy": 0.8443},
        {"pruner": "gmp", "pruner_label": "gmp 0.9 KD", "accelerator": "openvino", "accelerator_label": "openvino int8",
         "status": "failed", "reason": "boom", "accuracy": None},
        {"pruner": "magnitude", "pruner_label": "magnitude 0.9 1x4", "accelerator": "sparse-int8", "status": "ok",
         "accuracy": 0.5092, "collapsed": True}])
    deltas = {m["model"]: m for m in recipe_table.engine_deltas([run])}
    assert deltas["dense"]["points_vs_torch_fp32"] == {"openvino int8": 0.35}
    assert deltas["gmp 0.9 KD"]["points_vs_torch_fp32"] == {"sparse-int8": -0.57}  # a failed cell is left out
    assert deltas["magnitude 0.9 1x4"]["points_vs_torch_fp32"] == {"sparse-int8": None}  # no fp32 cell to compare
    table = recipe_table.engines_markdown(list(deltas.values()))
    assert "| dense | 0.8800 | 0.8835 (+0.35) | — | peers-accuracy |" in table
    assert "| gmp 0.9 KD | 0.8500 | — | 0.8443 (-0.57) | peers-accuracy |" in table
    assert "| magnitude 0.9 1x4 — collapsed | — | — | 0.5092 | peers-accuracy |" in table
    recipe_table.main([str(run), "--engines", "--out", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text())["engines"][0]["model"] == "dense"
