"""Report and compare pages from rows and run files a hand or an older version left incomplete:
rows with only the required fields, wrongly typed hardware.json / manifest.json fields, and the
page's wording (energy methods, task names, the folder a relative run directory names)."""
from __future__ import annotations

import json
from pathlib import Path

from profiler.cli import main

#: a row with only the fields profiler.results.row_problem requires
MINIMAL = {"cell_id": "abc", "task": "t", "pruner": "none", "pruner_params": {}, "accelerator": "torch-fp32",
           "accelerator_params": {}, "batch_size": 1, "seq_len": 8, "threads": 1, "status": "ok"}


def write_run(path: Path, rows: list[dict], hw: dict | None = None, manifest: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "hardware.json").write_text(json.dumps({"hardware_id": "hw1", "cpu_model": "x", "isa_flags": ["avx2"], "gpus": []}
                                                   if hw is None else hw))
    (path / "manifest.json").write_text(json.dumps({"sparsebench_version": "0", "git_commit": "abcdef0123456"}
                                                   if manifest is None else manifest))
    return path


def test_a_row_with_only_the_required_fields_renders_both_pages(tmp_path):
    run = write_run(tmp_path / "run", [MINIMAL, {**MINIMAL, "cell_id": "def", "pruner": "magnitude",
                                                 "pruner_params": {"sparsity": 0.5}, "status": "failed"}])
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["compare", str(run), "-o", str(tmp_path / "c.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    row = [r for r in html[html.index("<h2>All cells"):].split("<tr>") if "torch-fp32" in r and "magnitude" not in r][0]
    assert "n/a" in row and "nan" not in row.lower().replace("class", "")
    assert "n/a" in (tmp_path / "c.html").read_text()


def test_wrongly_typed_run_file_fields_render_as_text_or_unknown_with_a_warning(tmp_path):
    from reports.compare_page import build_compare_html
    from reports.report import build_report_html

    run = write_run(tmp_path / "run", [MINIMAL], hw={"hardware_id": "hw1", "cpu_model": "x", "isa_flags": None, "gpus": ["GPU0"]},
                    manifest={"sparsebench_version": "0", "git_commit": 1234567, "created": 5})
    other = write_run(tmp_path / "other", [MINIMAL])
    html = build_report_html(run)
    assert "ISA ?, GPU GPU0;" in html and "git 1234567" in html
    assert "hardware.json: field(s) of the wrong type (isa_flags is null, not a list; gpus holds str, not objects)" in html
    assert "manifest.json: field(s) of the wrong type (git_commit is a number, not text; created is a number, not text)" in html
    page = build_compare_html([run, other])
    assert "run/hardware.json: field(s) of the wrong type" in page and "run/manifest.json: field(s) of the wrong type" in page
    assert "other/hardware.json: field(s)" not in page
    assert "<td class='l' style='white-space:normal;max-width:420px'>1234567</td>" in page  # git commit, as text
    assert "GPU0 (?, driver ?, cc ?)" in page


def test_the_command_warns_of_wrongly_typed_run_file_fields(tmp_path, capsys):
    from profiler.cli import main

    run = write_run(tmp_path / "run", [MINIMAL], hw={"hardware_id": "hw1", "cpu_model": "x", "isa_flags": None})
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    assert "hardware.json: isa_flags is null, not a list" in capsys.readouterr().err


def test_a_run_directory_given_as_dot_is_named_by_its_folder(tmp_path, monkeypatch):
    run = write_run(tmp_path / "myrun", [MINIMAL])
    monkeypatch.chdir(run)
    assert main(["report", "."]) == 0 and main(["compare", ".", "-o", str(tmp_path / "c.html")]) == 0
    assert "<title>sparsebench report — myrun</title>" in (run / "report.html").read_text()
    assert "<td class='l'><b>run directory</b></td><td class='l' style='white-space:normal;max-width:420px'>myrun</td>" \
        in (tmp_path / "c.html").read_text()


def test_multiplicative_savings_name_the_energy_method_mark_collapsed_models_and_round_kept_down():
    import pandas as pd

    from reports.frame import add_savings
    from reports.multiply import multiply_section, multiply_table

    def cell(pruner, acc, p50, energy, accuracy, **extra):
        return dict(task="t", task_key="t", batch_size=8, seq_len=128, threads=2, kernel_variant="auto", status="ok", pruner=pruner,
                    pruner_label=pruner if pruner == "none" else f"{pruner} 0.9", accelerator=acc, accelerator_label=acc,
                    latency_p50_s=p50, energy_j_per_inference=energy, energy_method="estimated", accuracy=accuracy,
                    label=f"{pruner} + {acc}", **extra)

    df = add_savings(pd.DataFrame([
        cell("none", "torch-fp32", 0.12, 3.0, 0.9), cell("none", "int8-dynamic", 0.06, 1.5, 0.8999),
        cell("magnitude", "sparse-cpu", 0.04, 1.0, 0.88), cell("magnitude", "sparse-int8", 0.03, 0.75, 0.5, collapsed=True),
    ]))
    t = multiply_table(df)
    assert t.iloc[0]["energy_method"] == "estimated" and t.iloc[0]["collapsed_both"] and not t.iloc[0]["collapsed_sparse"]
    html = multiply_section(df)
    assert "energy × sparse (estimated)" in html and "energy × measured (estimated)" in html
    assert '"yaxis":{"title":{"text":"energy \\u00d7 (estimated)"}}' in html  # the chart's axis (JSON-escaped ×)
    assert "magnitude 0.9 b8 (collapsed)" in html and "55.55 % (collapsed)" in html
    assert "99.98 %" in html  # 0.8999 / 0.9, rounded down


def test_the_energy_banner_says_which_cells_each_method_covers(tmp_path):
    from reports.report import build_report_html

    methods = ["measured", "estimated", "estimated", "power-poll", "unavailable"]
    rows = [{**MINIMAL, "cell_id": f"c{i}", "batch_size": i + 1, "energy_method": m,
             "energy_j_per_inference": None if m == "unavailable" else 1.0} for i, m in enumerate(methods)]
    html = build_report_html(write_run(tmp_path / "mixed", rows))
    banner = html.split("Energy here", 1)[1].split("</div>", 1)[0]
    assert "not a measurement" in banner and "— not a measurement" not in banner  # said of the estimated cells only
    for m, n in (("estimated", 2), ("measured", 1), ("power-poll", 1), ("unavailable", 1)):
        assert f'<span class="badge {m}">{m}</span> for {n} cell(s)' in banner
    one = build_report_html(write_run(tmp_path / "est", [{**MINIMAL, "energy_method": "estimated", "energy_j_per_inference": 1.0}]))
    assert 'Energy here is <span class="badge estimated">estimated</span> — not a measurement.' in one
    assert "Energy here" not in build_report_html(write_run(tmp_path / "meas", [{**MINIMAL, "energy_method": "measured"}]))


def test_energy_headers_say_joules_per_sequence_beside_per_batch_latency(tmp_path):
    from reports.compare_page import build_compare_html
    from reports.report import build_report_html

    run = write_run(tmp_path / "run", [{**MINIMAL, "energy_method": "estimated", "energy_j_per_inference": 1.0, "accuracy": 0.9,
                                        "latency_p50_s": 0.01}])
    html = build_report_html(run)
    assert "<th class=\"\">J/inference (per sequence)</th>" in html and "J/inf net (per sequence)" in html
    assert "energy per inference (J per sequence)" in html and "J/inference is per sequence" in html
    assert "T1 J/inference (per sequence)</th>" in build_compare_html([run])


def test_the_report_names_the_cpu_with_its_family_and_model(tmp_path):
    """A generic cloud CPU name says which generation it is; a file without the numbers (an older
    run, an ARM CPU) shows the name alone, and neither is a field of the wrong type."""
    from reports.report import build_report_html
    from tests.test_hardware import old_style, x86_fp

    new = write_run(tmp_path / "new", [MINIMAL], hw=x86_fp(207))
    old = write_run(tmp_path / "old", [MINIMAL], hw=old_style(x86_fp(207)))
    html = build_report_html(new)
    assert "hardware <b>Intel(R) Xeon(R) Processor (family 6 model 207)</b>, 2 logical CPUs" in html
    assert "wrong type" not in html
    assert "hardware <b>Intel(R) Xeon(R) Processor</b>, 2 logical CPUs" in build_report_html(old)
