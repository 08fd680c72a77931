"""``sparsebench cache``: what the model cache holds, and removing what trainings and killed writes left."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from profiler.cache import partial_checkpoint
from profiler.cli import main
from profiler.config import parse_config
from profiler.errors import SparsebenchWarning
from profiler.runner import Reporter, Runner
from profiler.tasks.base import load_cached
from pruners.training import ORPHAN_AGE_S, save_checkpoint
from tests.conftest import tiny_config


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def _cache_json(capsys, cache) -> dict:
    assert main(["cache", "--cache-dir", str(cache), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cache_lists_what_a_run_stored_and_removes_only_the_leftovers(tmp_path, capsys):
    cache = tmp_path / "cache"
    cfg = parse_config(tiny_config(
        tasks=[{"name": "tiny-synthetic", "finetune_steps": 4, "n_train": 64, "n_eval": 16}],
        pruners=[{"name": "magnitude", "sparsity": 0.5},
                 {"name": "gmp", "sparsity": 0.5, "steps": 2, "batch_size": 8, "update_every": 1, "distill": True}],
        accelerators=[{"name": "torch-fp32"}], matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    Runner(cfg, tmp_path / "run", cache_dir=cache, reporter=Reporter()).run()
    stored = _cache_json(capsys, cache)["entries"]
    assert {e["status"] for e in stored} == {"stored"}
    assert sorted(e["kind"] for e in stored) == ["finetuned", "pruned", "pruned", "teacher_logits"]
    assert all(e["size_bytes"] > 0 for e in stored)
    about = {e["name"].split("-")[-2] if e["kind"] == "pruned" else e["kind"]: e["about"] for e in stored}
    assert about["finetuned"] == "tiny-synthetic, 4 fine-tuning steps"
    assert about["magnitude"] == "schedule one-shot, sparsity 0.5, structure unstructured"
    assert about["gmp"] == "schedule cubic (Zhu & Gupta 2017), sparsity 0.5, structure unstructured"  # its target

    # what a killed training, a damaged entry and a killed write leave, next to one training that may be running
    pruned = cache / "pruned"
    old_partial = partial_checkpoint(pruned / "tiny-synthetic-gmp-0123456789ab")
    save_checkpoint(old_partial, {"step": 1, "weights": torch.zeros(1000)})
    _age(old_partial, 2 * ORPHAN_AGE_S)
    live_partial = partial_checkpoint(pruned / "tiny-synthetic-gmp-ba9876543210")
    save_checkpoint(live_partial, {"step": 1})
    broken = cache / "finetuned" / "tiny-synthetic-badbadbadbad"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.warns(SparsebenchWarning, match="moved to"):
        assert load_cached(broken, lambda p: json.loads((p / "config.json").read_text()), "config.json") is None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = pruned / f"{old_partial.name}.tmp-{gone.pid}"
    orphan.write_bytes(b"half")
    _age(orphan, 2 * ORPHAN_AGE_S)
    writing = pruned / f"tiny-synthetic-magnitude-0123.tmp-{os.getpid()}-abcd1234"  # a live process's write
    writing.mkdir()
    _age(writing, 2 * ORPHAN_AGE_S)

    listed = {e["name"]: e["status"] for e in _cache_json(capsys, cache)["entries"]}
    [damaged] = [n for n in listed if n.startswith("tiny-synthetic-badbadbadbad.damaged-")]
    assert {n: s for n, s in listed.items() if s != "stored"} == {
        old_partial.name: "partial", live_partial.name: "partial", damaged: "damaged", orphan.name: "orphan"}
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    text = capsys.readouterr().out
    assert f"{live_partial.name}  (unfinished training: a run of the same configuration goes on from it; written in the last" in text
    assert "3 left over (partial, damaged or orphan)" in text and "sparsebench cache --remove-leftovers" in text

    assert main(["cache", "--cache-dir", str(cache), "--remove-leftovers"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"removed 3 left-over item(s) from {cache}")
    assert not old_partial.exists() and not orphan.exists() and not (cache / "finetuned" / damaged).exists()
    assert live_partial.exists() and writing.exists()
    after = _cache_json(capsys, cache)["entries"]
    assert [e["name"] for e in after if e["status"] != "stored"] == [live_partial.name]
    assert {e["name"] for e in after if e["status"] == "stored"} == {e["name"] for e in stored}


def test_cache_that_does_not_exist_is_empty_not_an_error(tmp_path, capsys):
    assert main(["cache", "--cache-dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == f"model cache {tmp_path / 'none'}: empty (the folder does not exist yet)"
    assert main(["cache", "--cache-dir", str(tmp_path / "none"), "--remove-leftovers"]) == 0
    assert "removed 0 left-over item(s)" in capsys.readouterr().out
    (tmp_path / "a-file").write_text("x")
    assert main(["cache", "--cache-dir", str(tmp_path / "a-file")]) == 2
    assert capsys.readouterr().err.strip() == f"sparsebench: --cache-dir {tmp_path / 'a-file'}: not a folder"


def test_odd_entries_are_listed_without_following_links_and_removal_goes_on_past_failures(tmp_path, capsys, monkeypatch):
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"x" * 100_000)
    for kind in ("pruned", "peers", "teacher_logits"):
        (cache / kind).mkdir(parents=True)
    for notes in ('"schedule"', "null", "5", '["schedule"]'):  # a report whose notes are not a table
        entry = cache / "pruned" / f"t-magnitude-{abs(hash(notes))}"
        entry.mkdir()
        (entry / "prune_report.json").write_text(f'{{"notes": {notes}}}')
    (cache / "pruned" / "t-gmp-bad").mkdir()
    (cache / "pruned" / "t-gmp-bad" / "prune_report.json").write_text("{not json")
    (cache / "peers" / "linked.damaged-1700000000").symlink_to(outside, target_is_directory=True)
    (cache / "peers" / "gone.partial.pt").symlink_to(tmp_path / "nowhere")  # a broken link
    os.utime(cache / "peers" / "gone.partial.pt", (0, 0), follow_symlinks=False)
    (cache / "peers" / "notes.tmp-draft").write_text("kept")  # not a writer's private file
    (cache / "teacher_logits" / "line\nbreak.damaged-1").write_text("x")
    future = cache / "teacher_logits" / "future.partial.pt"
    future.write_text("x")
    _age(future, -2 * ORPHAN_AGE_S)  # a clock's error, not a training running

    listed = {e["name"]: e for e in _cache_json(capsys, cache)["entries"]}
    assert {listed[n]["about"] for n in listed if n.startswith("t-")} == {"a pruned model", "no readable description"}
    assert listed["linked.damaged-1700000000"]["size_bytes"] < 1000  # the link, not what it points to
    assert listed["gone.partial.pt"]["status"] == "partial" and listed["notes.tmp-draft"]["status"] == "stored"
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    assert "line\\nbreak.damaged-1" in capsys.readouterr().out  # one line per entry

    real_unlink = type(future).unlink

    def unlink(self, *a, **kw):  # a file that cannot be removed (an immutable one, say)
        if self.name == "future.partial.pt":
            raise PermissionError(1, "Operation not permitted")
        return real_unlink(self, *a, **kw)

    monkeypatch.setattr(type(future), "unlink", unlink)
    assert main(["cache", "--cache-dir", str(cache), "--remove-leftovers", "--json"]) == 1
    out = capsys.readouterr()
    done = json.loads(out.out)
    assert sorted(e["name"] for e in done["removed"]) == ["gone.partial.pt", "line\nbreak.damaged-1", "linked.damaged-1700000000"]
    assert done["problems"] == [f"not removed: {future}: Operation not permitted"]
    assert (outside / "big.bin").exists() and future.exists() and (cache / "peers" / "notes.tmp-draft").exists()


def test_a_kind_folder_that_cannot_be_read_is_a_warning_and_the_rest_is_listed(tmp_path, capsys):
    cache = tmp_path / "cache"
    (cache / "finetuned" / "t-0123").mkdir(parents=True)
    (cache / "pruned").write_text("not a folder")  # where the pruned models' folder should be
    assert main(["cache", "--cache-dir", str(cache)]) == 1
    out = capsys.readouterr()
    assert "t-0123" in out.out
    assert out.err.startswith(f"sparsebench: warning: {cache / 'pruned'}: cannot be read (")


@pytest.mark.parametrize("training", [None, {"steps": 0}])  # None: what Task.load_finetuned writes for 0 steps
def test_a_dense_entry_used_as_given_is_not_called_fine_tuned(tmp_path, training):
    from profiler.cache import _about

    entry = tmp_path / "t-abc"
    entry.mkdir()
    (entry / "sparsebench_task.json").write_text(json.dumps({"task": "text-classification", "model": "m",
                                                            "training": training}))
    assert _about("finetuned", entry) == "text-classification / m, as given, not fine-tuned"
    (entry / "sparsebench_task.json").write_text(json.dumps({"task": "text-classification", "model": "m"}))
    assert _about("finetuned", entry) == "text-classification / m"  # an entry that does not say
