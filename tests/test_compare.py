"""``sparsebench compare``: the join across targets, energy-method flag and refused mixed ratios,
damaged results lines, gaps, version flag, best-at-99 % selection, a self-contained page."""
import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from profiler.cli import main
from profiler.results import Result
from profiler.identity import ids_of_row, stable_hash
from reports.compare import build_compare, joined_frame
from reports.compare_page import build_compare_html, write_compare

TASK_PARAMS = {"hidden_size": 64}
HW = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_vendor": "GenuineIntel", "isa_flags": ["avx2", "avx512f"],
      "physical_cores": 2, "logical_cpus": 2, "memory_gb": 24, "gpus": [], "hardware_id": "aaaaaaaaaa",
      "versions": {"python": "3.11", "torch": "2.13.0"}, "kernel_variant": "vnni", "kernel_variants_supported": ["scalar", "avx2", "avx512", "vnni"]}


def row(pruner="none", sparsity=None, acc="torch-fp32", batch=1, threads=1, kv="auto", p50=0.010, energy=1.0,
        method="estimated", accuracy=0.90, status="ok", version="0.1.0", device="cpu", structure=None) -> dict:
    pp = ({} if sparsity is None else {"sparsity": sparsity}) | ({} if structure is None else {"structure": structure})
    canon = {"task": {"name": "tiny", "params": TASK_PARAMS}, "pruner": {"name": pruner, "params": pp},
             "accelerator": {"name": acc, "params": {}}, "batch_size": batch, "seq_len": 32, "threads": threads, "kernel_variant": kv}
    ok = status == "ok"
    r = Result(cell_id=stable_hash(canon, 12), task="tiny", pruner=pruner, pruner_params=pp, accelerator=acc, accelerator_params={},
               batch_size=batch, seq_len=32, threads=threads, status=status, reason=None if ok else "why not", kernel_variant=kv,
               device=device, accuracy=accuracy if ok else None, latency_p50_s=p50 if ok else None, latency_p90_s=p50 * 1.1 if ok else None,
               energy_j_per_inference=energy if ok else None, energy_method=method if ok else "unavailable",
               hardware_id="aaaaaaaaaa", sparsebench_version=version,
               extra={"task_params": TASK_PARAMS, "pruner_label": pruner if sparsity is None else f"{pruner} {sparsity}", "accelerator_label": acc})
    d = r.to_dict()
    d.update({k: v for k, v in ids_of_row(d).items() if d.get(k) is None})  # as the runner stores them
    return d


def without_ids(rows: list[dict]) -> list[dict]:
    """Rows as written before recipe_id / model_id were stored."""
    return [{k: v for k, v in r.items() if k not in ("recipe_id", "model_id")} for r in rows]


def standard(threads=1, kv="auto", speed=1.0, method="estimated", **kw) -> list[dict]:
    """dense fp32 (baseline), dense int8 (2× faster), magnitude 0.5 fp32 (1.25×), at batch 1 and 8."""
    out = []
    for b in (1, 8):
        out += [row(batch=b, threads=threads, kv=kv, p50=0.010 * b / speed, energy=1.0 * b / speed, method=method, **kw),
                row(acc="int8-dynamic", batch=b, threads=threads, kv=kv, p50=0.005 * b / speed, energy=0.5 * b / speed, method=method, **kw),
                row("magnitude", 0.5, batch=b, threads=threads, kv=kv, p50=0.008 * b / speed, energy=0.8 * b / speed, method=method, **kw)]
    return out


def make_run(path: Path, rows: list[dict], hw: dict | None = None, version: str = "0.1.0", tail: str = "", measure=None) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    (path / "hardware.json").write_text(json.dumps(hw or HW))
    (path / "manifest.json").write_text(json.dumps({
        "sparsebench_version": version, "git_commit": "abc", "created": "2026-01-01T00:00:00",
        "config": {"measure": measure or {"min_iters": 5}}, "hardware_id": (hw or HW)["hardware_id"]}))
    return path


@pytest.fixture
def two_targets(tmp_path):
    a = make_run(tmp_path / "a", standard(threads=1, kv="avx2"))
    b = make_run(tmp_path / "b", standard(threads=2, kv="avx512", speed=2.0))
    return a, b


def get(j: pd.DataFrame, target: str, pruner="none", acc="torch-fp32", batch=1) -> pd.Series:
    m = j[(j["target"] == target) & (j["pruner"] == pruner) & (j["accelerator"] == acc) & (j["batch_size"] == batch)]
    assert len(m) == 1, m
    return m.iloc[0]


def test_join_on_cell_config_without_target_axes(two_targets):
    c = build_compare(two_targets)
    assert [t.label for t in c.targets] == ["avx2 · 1 thread", "avx512 · 2 threads"]  # same hardware: axes only
    j = c.joined
    assert len(j) == 2 * 6 and (j["status"] == "ok").all()
    a, b = get(j, "T1", acc="int8-dynamic"), get(j, "T2", acc="int8-dynamic")
    assert a["cell_id"] != b["cell_id"] and a["recipe_id"] == b["recipe_id"]  # cell ids hash threads/variant; the join does not
    # savings within each target against its own dense fp32 baseline
    assert a["latency_savings_factor"] == pytest.approx(2.0) and b["latency_savings_factor"] == pytest.approx(2.0)
    assert get(j, "T2", "magnitude")["latency_savings_factor"] == pytest.approx(1.25)
    # across targets: T1's value ÷ T2's (same method here, so energy too)
    assert b["latency_vs_ref"] == pytest.approx(2.0) and b["energy_vs_ref"] == pytest.approx(2.0)
    assert not c.flags


def test_join_uses_the_stored_recipe_id_and_recomputes_missing_ones(tmp_path):
    a = make_run(tmp_path / "a", without_ids(standard()))  # an old run: ids recomputed, the same
    b = make_run(tmp_path / "b", standard(threads=2, speed=2.0))
    c = build_compare([a, b])
    assert len(c.joined) == 2 * 6 and (c.joined["status"] == "ok").all()
    assert get(c.joined, "T2", acc="int8-dynamic")["latency_vs_ref"] == pytest.approx(2.0)
    renamed = standard(threads=2)
    renamed[0]["recipe_id"] = "stored-id"  # the row's own field decides the join
    c = build_compare([a, make_run(tmp_path / "c", renamed)])
    stored = c.joined[c.joined["recipe_id"] == "stored-id"].set_index("target")["status"]
    assert stored.to_dict() == {"T1": "missing", "T2": "ok"} and len(c.joined) == 2 * 7


def test_labels_name_the_machine_when_hardware_differs(tmp_path):
    other = dict(HW, cpu_model="AMD EPYC 7763 64-Core Processor", hardware_id="bbbbbbbbbb", isa_flags=["avx2"])
    c = build_compare([make_run(tmp_path / "a", standard()), make_run(tmp_path / "b", standard(), hw=other)])
    assert c.targets[0].label.startswith("Intel Xeon Platinum 8480+ · auto")
    assert c.targets[1].label.startswith("AMD EPYC 7763 · auto") and c.targets[1].label.endswith("1 thread")


def test_one_run_sweeping_threads_is_two_targets(tmp_path):
    c = build_compare([make_run(tmp_path / "a", standard(threads=1) + standard(threads=2, speed=1.5))])
    assert [t.label for t in c.targets] == ["auto · 1 thread", "auto · 2 threads"]
    assert get(c.joined, "T2", acc="int8-dynamic")["latency_vs_ref"] == pytest.approx(1.5)


def test_energy_methods_differ_flagged_and_mixed_ratios_refused(tmp_path):
    a = make_run(tmp_path / "a", standard(method="estimated"))
    b = make_run(tmp_path / "b", standard(threads=2, method="measured"))
    c = build_compare([a, b])
    assert c.energy_methods_differ and any("Energy methods differ" in f for f in c.flags)
    r = get(c.joined, "T2", acc="int8-dynamic")
    assert pd.isna(r["energy_vs_ref"]) and r["energy_vs_ref_refused"] == "estimated vs measured"
    assert r["latency_vs_ref"] == pytest.approx(1.0)  # latency is always comparable
    assert r["energy_savings_factor"] == pytest.approx(2.0)  # within one target: one method
    html = build_compare_html([a, b])
    assert "Energy methods differ between targets" in html and "mixed: estimated vs measured" in html
    assert "--allow-mixed-energy" in html

    allowed = build_compare([a, b], allow_mixed_energy=True)
    r = get(allowed.joined, "T2", acc="int8-dynamic")
    assert r["energy_vs_ref"] == pytest.approx(1.0) and r["energy_vs_ref_mixed"]
    assert "⚠ mixed" in build_compare_html([a, b], allow_mixed_energy=True)


def test_mixed_methods_inside_a_target_refused_unless_allowed(tmp_path):
    """A GPU cell measured by NVML against an estimated CPU baseline: no energy factor by default."""
    rows = [row(), row(acc="cuda-fp16", device="cuda", p50=0.002, energy=0.25, method="measured")]
    run = make_run(tmp_path / "g", rows)
    gpu = get(joined_frame([run]), "T1", acc="cuda-fp16")
    assert gpu["latency_savings_factor"] == pytest.approx(5.0) and pd.isna(gpu["energy_savings_factor"])
    gpu = get(joined_frame([run], allow_mixed_energy=True), "T1", acc="cuda-fp16")
    assert gpu["energy_savings_factor"] == pytest.approx(4.0) and gpu["energy_mixed"]
    assert build_compare([run]).energy_methods_differ  # flagged even inside one target


def test_truncated_last_line_read_reported_no_crash(tmp_path, capsys):
    rows = standard()
    a = make_run(tmp_path / "a", rows, tail=json.dumps(row(acc="bf16"))[:50])  # killed mid-write
    b = make_run(tmp_path / "b", standard(threads=2))
    c = build_compare([a, b])
    assert c.targets[0].damaged_lines == [len(rows) + 1]
    assert (c.joined[c.joined["target"] == "T1"]["status"] == "ok").sum() == len(rows)  # every complete row
    html = build_compare_html([a, b])
    assert f"damaged line(s) {len(rows) + 1}" in html
    out = tmp_path / "cmp.html"
    assert main(["compare", str(a), str(b), "-o", str(out)]) == 0 and out.exists()


def test_gaps_are_visible(tmp_path):
    full = standard()
    a = make_run(tmp_path / "a", full)
    b = make_run(tmp_path / "b", [r for r in standard(threads=2) if r["accelerator"] != "int8-dynamic"]
                 + [row("magnitude", 0.9, threads=2, status="failed")])
    c = build_compare([a, b])
    j = c.joined
    assert get(j, "T2", acc="int8-dynamic", batch=8)["status"] == "missing"
    assert get(j, "T1", "magnitude", batch=8)["status"] == "ok"
    assert (j[(j["target"] == "T1") & (j["pruner_label"] == "magnitude 0.9")]["status"] == "missing").all()
    assert (j[(j["target"] == "T2") & (j["pruner_label"] == "magnitude 0.9")]["status"] == "failed").all()
    assert len(j) == 2 * 7  # every configuration for every target
    html = build_compare_html([a, b])
    assert "missing" in html and "Gaps (configurations a target lacks): T1: 1, T2: 2" in html


def test_version_flag(tmp_path):
    a = make_run(tmp_path / "a", standard())
    b = make_run(tmp_path / "b", standard(threads=2, version="0.2.0"), version="0.2.0")
    c = build_compare([a, b])
    assert c.versions_differ and any("different sparsebench versions" in f for f in c.flags)
    assert "different sparsebench versions" in build_compare_html([a, b])
    same = build_compare([a, make_run(tmp_path / "c", standard(threads=2))])
    assert not same.versions_differ and not same.flags


def test_best_configuration_at_99_percent_of_dense(tmp_path):
    rows = [row(p50=0.010, accuracy=0.90),
            row("magnitude", 0.9, p50=0.0033, accuracy=0.85),   # 3×, keeps 94 %: excluded
            row("magnitude", 0.7, p50=0.0050, accuracy=0.895),  # 2×, keeps 99.4 %: the winner
            row("magnitude", 0.5, p50=0.0067, accuracy=0.90),   # 1.5×
            row(acc="int8-dynamic", p50=0.004, status="failed")]
    slow = [row(threads=2, p50=0.010, accuracy=0.90), row("magnitude", 0.7, threads=2, p50=0.009, accuracy=0.895),
            row("magnitude", 0.5, threads=2, p50=0.008, accuracy=0.90)]
    c = build_compare([make_run(tmp_path / "a", rows), make_run(tmp_path / "b", slow)])
    best = c.best.set_index("target")
    assert best.loc["T1", "pruner_label"] == "magnitude 0.7" and best.loc["T1", "latency_savings_factor"] == pytest.approx(2.0)
    assert best.loc["T2", "pruner_label"] == "magnitude 0.5" and best.loc["T2", "latency_savings_factor"] == pytest.approx(1.25)
    assert best.loc["T1", "accuracy_kept"] >= 0.99
    html = build_compare_html([tmp_path / "a", tmp_path / "b"])
    assert "Best configuration per target" in html and "magnitude 0.7 + torch-fp32 · b1 s32</b> — 2× latency" in html


def test_two_tasks_of_one_plugin_each_get_their_best_configuration(tmp_path):
    """Two data sets under one task name (text-classification on two files) are two shapes, not one."""
    def other_task(r: dict) -> dict:
        r = {k: v for k, v in r.items() if k not in ("cell_id", "recipe_id", "model_id")} | {"task_params": {"hidden_size": 32}}
        canon = {"task": {"name": r["task"], "params": r["task_params"]}, "pruner": {"name": r["pruner"], "params": r["pruner_params"]},
                 "accelerator": {"name": r["accelerator"], "params": {}}, "batch_size": r["batch_size"], "seq_len": 32,
                 "threads": r["threads"], "kernel_variant": r["kernel_variant"]}
        return r | {"cell_id": stable_hash(canon, 12)} | ids_of_row(r | {"cell_id": stable_hash(canon, 12)})

    first = [row(p50=0.010, accuracy=0.90), row("magnitude", 0.7, p50=0.0050, accuracy=0.90)]      # magnitude wins
    second = [other_task(row(p50=0.010, accuracy=0.80)), other_task(row("magnitude", 0.7, p50=0.0050, accuracy=0.70)),
              other_task(row(acc="int8-dynamic", p50=0.008, accuracy=0.80))]                          # int8 wins
    c = build_compare([make_run(tmp_path / "a", first + second)])
    best = c.best.sort_values("accelerator_label")
    assert len(best) == 2 and best["task_key"].nunique() == 2
    assert list(best["accelerator_label"]) == ["int8-dynamic", "torch-fp32"]
    assert list(best["pruner_label"]) == ["none", "magnitude 0.7"]
    assert all(t.startswith("tiny [") for t in best["task_shown"])  # one name, two tasks: told apart
    html = build_compare_html([tmp_path / "a"])
    assert html.count("tiny [") >= 2


def test_page_is_self_contained(two_targets, tmp_path):
    out = write_compare(two_targets, tmp_path / "sub" / "compare.html")
    html = out.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)  # nothing fetched: renders offline
    assert "cdn.plot.ly" not in "".join(re.findall(r"<script[^>]*>", html))
    assert html.count("plotly.js v") <= 2  # plotly.js embedded once (its banner appears in one bundle)
    assert html.count("Plotly.newPlot") >= 4  # savings, accuracy, energy bars, scatter
    for text in ("avx2 · 1 thread", "avx512 · 2 threads", "Savings factors per target", "Hardware targets", "Accuracy vs latency"):
        assert text in html


def test_empty_and_missing_runs_do_not_crash(tmp_path):
    empty = make_run(tmp_path / "e", [])
    html = build_compare_html([empty])
    assert "No results to compare" in html
    assert main(["compare", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")]) == 2


def test_structure_named_in_labels(tmp_path):
    """An unstructured and a 2:4 pruner at the same sparsity are two configurations, labelled apart."""
    nm = row("magnitude", 0.5, p50=0.006, structure="2:4")
    c = build_compare([make_run(tmp_path / "a", [row(), row("magnitude", 0.5, p50=0.008), nm])])
    labels = sorted(c.joined["recipe"])
    assert labels == ["magnitude 0.5 + torch-fp32 · b1 s32", "magnitude 0.5 2:4 + torch-fp32 · b1 s32", "none + torch-fp32 · b1 s32"]


def test_noisy_cells_do_not_win_while_a_steady_one_qualifies(tmp_path):
    noisy = row("magnitude", 0.9, p50=0.001, accuracy=0.90)
    noisy["latency_spread_flag"] = True  # IQR/median > 10 %: a stall-ridden measurement
    steady = row("magnitude", 0.5, p50=0.005, accuracy=0.90)
    steady["latency_spread_flag"] = False
    c = build_compare([make_run(tmp_path / "a", [row(p50=0.010), noisy, steady])])
    w = c.best.iloc[0]
    assert w["pruner_label"] == "magnitude 0.5" and not w["noisy"]
    assert w["noisy_skipped"] == "magnitude 0.9 + torch-fp32 (10×)"
    assert "not counted (noisy)" in build_compare_html([tmp_path / "a"])


def test_cli_warns_for_one_target_and_for_targets_without_a_cell_in_common(tmp_path, capsys):
    a = make_run(tmp_path / "a", standard())
    other = [dict(r, recipe_id="other-" + r["recipe_id"]) for r in standard(threads=2)]  # another task's cells
    b = make_run(tmp_path / "b", other)
    assert main(["compare", str(a), "-o", str(tmp_path / "one.html")]) == 0
    assert "one run directory" in capsys.readouterr().err and (tmp_path / "one.html").is_file()
    assert main(["compare", str(a), str(b), "-o", str(tmp_path / "two.html")]) == 0
    assert "no cell in common" in capsys.readouterr().err
    assert main(["compare", str(a), str(make_run(tmp_path / "c", standard(threads=2))), "-o", str(tmp_path / "3.html")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_cli_says_the_notes_the_page_shows(tmp_path, capsys):
    """One home for the notes: stderr carries build_compare's notes, word for word (an empty first
    folder is named as such, not blamed on other tasks, pruners or accelerators)."""
    a = make_run(tmp_path / "a", standard())
    b = make_run(tmp_path / "b", [dict(r, recipe_id="other-" + r["recipe_id"], batch_size=r["batch_size"] + 1)
                                  for r in standard(threads=2)])
    empty = make_run(tmp_path / "e", [])
    for dirs in ([a, b], [empty, a], [a]):
        notes = build_compare(dirs).notes
        assert notes
        out = tmp_path / f"{len(dirs)}-{dirs[0].name}.html"
        assert main(["compare", *map(str, dirs), "-o", str(out)]) == 0
        said = [line.removeprefix("sparsebench: warning: ") for line in capsys.readouterr().err.splitlines()
                if line.startswith("sparsebench: warning: ") and "has no valid result rows" not in line]
        assert said == notes
        assert all(html.escape(n, quote=True) in out.read_text() for n in notes)


def test_a_run_stopped_before_its_first_cell_is_told_how_to_go_on(tmp_path, capsys):
    run = make_run(tmp_path / "r", [])
    (run / "results.jsonl").unlink()
    assert main(["report", str(run)]) == 2
    assert f"sparsebench run --resume {run}" in capsys.readouterr().err
    assert main(["compare", str(run), str(make_run(tmp_path / "a", standard()))]) == 2
    assert "no cell has finished yet" in capsys.readouterr().err


def test_report_labels_tell_apart_rows_of_a_sweep_their_labels_do_not_show(tmp_path):
    from reports.frame import load_rows

    rows = [dict(row(acc="wrap"), accelerator_params={"level": lvl}, cell_id=f"c{lvl}") for lvl in (1, 2)]
    df, _ = load_rows(make_run(tmp_path / "r", rows))
    assert sorted(df["accelerator_label"]) == ["wrap level=1", "wrap level=2"]


def _xeon(model: int, old: bool = False) -> dict:
    """hardware.json of a generic-named Xeon VM of family 6 and this model number (143 or 207), as
    written now (its id pinned: files on disk), or as written before the family entered the id (``old``)."""
    from tests.test_hardware import ID_143, ID_207, old_style, x86_fp

    fp = x86_fp(model)
    hw = {**HW, **(old_style(fp) if old else {**fp, "hardware_id": {143: ID_143, 207: ID_207}[model]})}
    hw.pop("memory_gb")  # x86_fp's memory_gib holds the RAM
    return hw


def test_an_old_and_a_new_run_of_one_machine_read_as_one_machine(tmp_path):
    """A run written before the x86 family entered the hardware_id and one written since, on the
    same machine: their ids differ, but it is one machine, labelled by its axes alone."""
    old, new = _xeon(207, old=True), _xeon(207)
    assert old["hardware_id"] != new["hardware_id"]
    c = build_compare([make_run(tmp_path / "a", standard(threads=1), hw=old),
                       make_run(tmp_path / "b", standard(threads=2), hw=new)])
    assert [t.label for t in c.targets] == ["auto · 1 thread", "auto · 2 threads"]


def test_two_cpu_generations_of_one_name_are_labelled_by_family_and_model(tmp_path):
    a, b = make_run(tmp_path / "a", standard(), hw=_xeon(143)), make_run(tmp_path / "b", standard(), hw=_xeon(207))
    c = build_compare([a, b])
    assert [t.label for t in c.targets] == ["Intel Xeon (family 6 model 143) · auto · 1 thread",
                                            "Intel Xeon (family 6 model 207) · auto · 1 thread"]
    page = build_compare_html([a, b])
    assert "<td class='l' style='white-space:normal;max-width:420px'>Intel(R) Xeon(R) Processor (family 6 model 207)</td>" in page
