"""Fault class 4: honesty at the edges. Non-finite values are gaps, never 0×; why CPU energy is
estimated is in the rows and on the report's first screen; rows record the CPU affinity, torch's
thread count and the thread variables, and the oversubscription warning reads the affinity mask;
report markers are plain text; rows state the padding of their accuracy pass."""
from __future__ import annotations

import math
import re
import types

import pandas as pd

from accelerators.int8_dynamic import Int8Dynamic
from accelerators.sparse_int8 import SparseInt8
from accelerators.torch_fp32 import TorchFP32
from profiler.energy import EnergyResult, estimate_reason
from profiler.hardware import cpu_affinity, cpu_list_text, thread_fields
from profiler.meters.auto import AutoMeter
from profiler.meters.estimate import EstimateMeter
from profiler.runner import Reporter, Runner, padding_fields
from profiler.config import parse_config
from reports.frame import add_savings, is_number
from reports.report import build_report_html
from tests.conftest import tiny_config
from tests.test_compare import make_run, row, standard


def test_infinite_latency_is_a_gap_not_zero_x():
    rows = [row(p50=0.010), row("magnitude", 0.5, p50=0.01)]
    rows[1]["latency_p50_s"] = math.inf
    df = add_savings(pd.DataFrame(rows))
    assert not is_number(math.inf) and not is_number(float("nan")) and is_number(0.5)
    assert math.isnan(df.loc[1, "latency_savings_factor"])


class _Unreadable:
    name, method, resolution_s, max_safe_window_s = "rapl", "measured", 1e-3, None

    def availability(self):
        return False, "energy_uj is readable by root only (permission denied)"


def test_why_cpu_energy_is_estimated_reaches_the_row():
    auto = AutoMeter(meters={"rapl": _Unreadable(), "nvml": None, "estimate": EstimateMeter(tdp_w=100.0)}, gpu=False)
    why = estimate_reason(auto.describe())
    assert why.startswith("CPU: estimated") and "permission denied" in why
    res = EnergyResult(method="estimated", reason=None, window_s=1.0, energy_j={}, energy_j_per_inference=1.0,
                       energy_j_per_inference_net=1.0, meter_info=auto.describe())
    assert res.row_fields()["energy_estimated_because"] == why
    chosen = EnergyResult(method="estimated", reason=None, window_s=1.0, energy_j={}, energy_j_per_inference=1.0,
                          energy_j_per_inference_net=1.0, meter_info={"meter": "estimate"})
    assert "config chose the 'estimate' meter" in chosen.row_fields()["energy_estimated_because"]
    measured = EnergyResult(method="measured", reason=None, window_s=1.0, energy_j={}, energy_j_per_inference=1.0,
                            energy_j_per_inference_net=1.0)
    assert "energy_estimated_because" not in measured.row_fields()


def test_report_first_screen_says_why_energy_is_estimated_and_uses_plain_markers(tmp_path):
    rows = standard()
    for r in rows:
        r["energy_estimated_because"] = "CPU: estimated because RAPL is unavailable: permission denied"
    rows[0]["contention_flag"] = True
    html = build_report_html(make_run(tmp_path / "a", rows))
    first = html[: html.index("<h2>Accuracy vs latency")]
    assert "permission denied" in first and "[busy]" in first
    assert not re.search("[\u26d4\U0001F000-\U0001FAFF]", html)  # no emoji-presentation markers


def test_thread_fields_record_affinity_torch_threads_and_env():
    f = thread_fields(3, affinity=[0, 1, 2, 5], env={"OMP_NUM_THREADS": "4", "HOME": "/x"})
    assert f == {"cpu_affinity": "0-2,5", "affinity_cpus": 4, "torch_threads": 3, "thread_env": {"OMP_NUM_THREADS": "4"}}
    assert cpu_affinity(lambda pid: {3, 1}) == [1, 3]
    assert cpu_list_text([]) == "" and cpu_list_text([7]) == "7"


def test_oversubscription_warning_reads_the_affinity_mask(tmp_path, monkeypatch):
    messages = []
    rep = Reporter()
    rep.message = messages.append
    cfg = parse_config(tiny_config(matrix={"batch_size": [1], "seq_len": [16], "threads": [1, 2]}))
    monkeypatch.setattr("profiler.runner.cpu_affinity", lambda: [4])
    Runner(cfg, tmp_path, reporter=rep)._warn_oversubscription()
    assert messages == ["warning: threads=2 exceeds the 1 CPUs this process may use (affinity 4); latency will suffer"]


def test_rows_state_their_padding_and_flag_padding_sensitive_accelerators():
    cell = types.SimpleNamespace(seq_len=128)
    plain = padding_fields(TorchFP32(), cell, 64)
    assert plain["accuracy_padding"].startswith("dynamic") and "seq_len 128" in plain["timing_padding"]
    assert "padding_flag" not in plain
    assert "padding_flag" in padding_fields(Int8Dynamic(), cell, 64)
    assert "padding_flag" in padding_fields(SparseInt8(act_quant="tensor"), cell, 64)
    assert "padding_flag" not in padding_fields(SparseInt8(act_quant="token"), cell, 64)
    # per-token activations, but the dense layers in torch's dynamic INT8 (one scale per call)
    assert "padding_flag" in padding_fields(SparseInt8(act_quant="token", dense_fallback="torch-int8"), cell, 64)


def test_report_says_which_cells_have_padding_dependent_outputs(tmp_path):
    rows = standard()
    rows[1]["padding_flag"] = "outputs depend on padding"
    html = build_report_html(make_run(tmp_path / "a", rows))
    assert "[padding] 1 cell(s)" in html[: html.index("<h2>Accuracy vs latency")]
