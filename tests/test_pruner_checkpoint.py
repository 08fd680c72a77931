"""An interrupted training pruner (GMP, gradual OBS, movement) goes on from its last checkpoint and
ends with the weights, masks and report of a run never interrupted; a damaged checkpoint, one of
another configuration or one that cannot be restored is warned about and training starts over; the
runner keeps the checkpoint beside the pruned model's cache entry and deletes it once the model is stored."""
import copy
import json
import warnings

import pytest
import torch

import pruners.training
from profiler.tasks import TinySynthetic
from pruners.gmp import GMPPruner
from pruners.movement import MovementPruner
from pruners.obs import OBSPruner
from pruners.training import CheckpointWarning

#: wall-clock fields of a report (they differ between any two runs)
CLOCK = {"wall_time_s", "steps_per_s", "resumed_from_step", "fisher_gradient_s", "fisher_inverse_s", "obs_update_s"}

CONFIGS = {
    # distillation (hidden states too), augmentation's random copies, the weight average
    "gmp": lambda **kw: GMPPruner(**{**dict(sparsity=0.8, steps=10, update_every=2, end_frac=0.6, batch_size=8, distill=True,
                                            hidden_distill=1.0, augment=0.5, ema_decay=0.5, precision="fp32"), **kw}),
    # a gradient stream of its own, the Fisher rebuilt at each pruning step, distillation (its default)
    "obs": lambda **kw: OBSPruner(**{**dict(sparsity=0.8, steps=8, update_every=2, end_frac=0.75, batch_size=8, num_grads=4,
                                            block_size=8, grad_batch_size=4, precision="fp32"), **kw}),
    # scores, their Adam state and latent values; the paper's threshold (its snap at the end of the ramp)
    "movement": lambda **kw: MovementPruner(**{**dict(sparsity=0.7, steps=10, batch_size=8, variant="soft", final_threshold=0.3,
                                                      precision="fp32"), **kw}),
    "movement-hard": lambda **kw: MovementPruner(**{**dict(sparsity=0.7, steps=10, batch_size=8, variant="hard",
                                                           score_optimizer="sum", precision="fp32"), **kw}),
    # the learning rate rewound at each pruning step, attention maps distilled, 1x4 blocks ranked over all
    # layers at once with a floor per matrix, pruning from a starting sparsity after a warm-up
    "gmp-cyclic": lambda **kw: GMPPruner(**{**dict(sparsity=0.75, initial_sparsity=0.25, steps=10, update_every=2, end_frac=0.6,
                                                   warmup_steps=2, lr_schedule="cyclic", batch_size=8, distill=True,
                                                   attention_distill=1.0, structure="1x4", scope="global", min_keep=0.1,
                                                   precision="fp32"), **kw}),
    # an ensemble teacher (a second dense model fine-tuned from another seed), OBS in 1x4 blocks
    "obs-ensemble": lambda **kw: OBSPruner(**{**dict(sparsity=0.75, steps=8, update_every=2, end_frac=0.75, batch_size=8,
                                                     num_grads=4, block_size=8, grad_batch_size=4, structure="1x4",
                                                     teacher_seeds=[1], precision="fp32"), **kw}),
}


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=0, n_train=128, n_eval=16, hidden_size=32, intermediate_size=64)
    return task, task.base_model()


@pytest.fixture(autouse=True)
def every_step(monkeypatch):
    monkeypatch.setattr(pruners.training, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every step


def _prune(make, dense, task, checkpoint=None, progress=None, **kw):
    p = make(**kw)
    p.checkpoint = checkpoint
    model = copy.deepcopy(dense)
    return model, p.prune(model, task, progress)


def _without_clock(x):
    if isinstance(x, dict):
        return {k: _without_clock(v) for k, v in x.items() if k not in CLOCK}
    return x


def _assert_same(a, b, rep_a, rep_b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        if x.is_floating_point():  # bit for bit, the sign of a zero included
            x, y = x.view(torch.int32), y.view(torch.int32)
        assert torch.equal(x, y), name
    da, db = rep_a.to_dict(), rep_b.to_dict()
    assert da["per_layer"] == db["per_layer"] and da["prunable_zeros"] == db["prunable_zeros"] > 0
    assert _without_clock(da) == _without_clock(db)


def _interrupt(make, dense, task, checkpoint, stop):
    def stop_at(step, total, loss, sparsity):
        if step == stop:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _prune(make, dense, task, checkpoint, stop_at)
    assert torch.load(checkpoint, weights_only=True)["step"] == stop


@pytest.mark.parametrize("name, stop", [("gmp", 3), ("gmp", 8), ("obs", 3), ("obs", 6), ("movement", 4), ("movement", 9),
                                        ("movement-hard", 5), ("gmp-cyclic", 3), ("gmp-cyclic", 7), ("obs-ensemble", 5)])
def test_an_interrupted_pruner_resumes_to_the_same_weights_masks_and_report(tiny, tmp_path, name, stop):
    task, dense = tiny
    make = CONFIGS[name]
    whole, rep_whole = _prune(make, dense, task)
    checkpoint = tmp_path / "p.partial.pt"
    _interrupt(make, dense, task, checkpoint, stop)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        resumed, rep = _prune(make, dense, task, checkpoint, lambda step, *a: seen.append(step))
    assert seen == list(range(stop + 1, rep.notes["training"]["steps"] + 1))  # steps 1..stop not trained again
    _assert_same(whole, resumed, rep_whole, rep)
    speed = rep.notes["training_speed"]
    assert speed["resumed_from_step"] == stop and speed["steps"] == rep_whole.notes["training_speed"]["steps"]
    assert "resumed_from_step" not in rep_whole.notes["training_speed"]
    if name == "obs":
        assert rep.notes["fisher_passes"] == 3  # pruning steps 2, 4, 6: none lost, none repeated
    if name == "movement":
        assert rep.notes["soft"]["sparsity_before_final_adjustment"] is not None
        assert rep.notes["soft"]["final_sigmoid_threshold"] is not None
    if name == "gmp":
        assert rep.notes["augmentation"]["examples_augmented"] > 0 and rep.notes["weight_average"]["steps_averaged"] == 4


def test_checkpoints_change_nothing_and_none_follows_the_last_step(tiny, tmp_path):
    task, dense = tiny
    make = CONFIGS["gmp"]
    plain, rep_plain = _prune(make, dense, task)
    checkpoint = tmp_path / "p.partial.pt"
    saved, rep = _prune(make, dense, task, checkpoint)
    _assert_same(plain, saved, rep_plain, rep)
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 9  # after step 9 of 10, not after the last
    assert not list(tmp_path.glob("*.tmp-*"))  # written aside, then renamed


def test_a_checkpoint_that_cannot_be_written_costs_the_checkpoints_not_the_training(tiny, tmp_path):
    task, dense = tiny
    make = CONFIGS["gmp"]
    whole, rep_whole = _prune(make, dense, task)
    (tmp_path / "a-file").write_text("")
    with pytest.warns(CheckpointWarning, match="could not be written.*goes on without checkpoints") as caught:
        model, rep = _prune(make, dense, task, tmp_path / "a-file" / "p.partial.pt")
    assert len([w for w in caught if issubclass(w.category, CheckpointWarning)]) == 1  # once, not at every step
    _assert_same(whole, model, rep_whole, rep)


def test_a_full_disk_mid_write_costs_the_checkpoints_not_the_training(tiny, tmp_path):
    """A file-size limit stands in for a full disk: torch's serializer fails mid-write (it raises
    RuntimeError of its own); the save says OSError, leaves no half file, and training goes on."""
    import subprocess
    import sys

    code = (  # in a child process: the limit and its SIGXFSZ must not reach the test runner
        "import resource, signal, sys, torch\n"
        "from pathlib import Path\n"
        "from pruners.training import save_checkpoint\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "try:\n"
        "    save_checkpoint(Path(sys.argv[1]), {'w': torch.zeros(1 << 16)})\n"
        "except OSError as exc:\n"
        "    print('OSError', exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.partial.pt")], capture_output=True, text=True)
    assert out.stdout.startswith("OSError"), (out.stdout, out.stderr[-2000:])
    assert list(tmp_path.iterdir()) == []
    task, dense = tiny
    make = CONFIGS["gmp"]
    whole, rep_whole = _prune(make, dense, task)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", full)
        with pytest.warns(CheckpointWarning, match="could not be written"):
            model, rep = _prune(make, dense, task, tmp_path / "p.partial.pt")
    _assert_same(whole, model, rep_whole, rep)
    assert list(tmp_path.iterdir()) == []


def test_a_training_pruner_from_elsewhere_resumes_only_when_it_says_so():
    """Its own state (a score that accumulates, say) is not in the checkpoint unless it saves it."""
    class Mine(GMPPruner):
        pass

    class MineSaved(GMPPruner):
        resumable = True

    assert GMPPruner(sparsity=0.5).resumable and OBSPruner(sparsity=0.5).resumable
    assert MovementPruner(sparsity=0.5).resumable
    assert not Mine(sparsity=0.5).resumable and MineSaved(sparsity=0.5).resumable


def test_a_damaged_checkpoint_is_warned_about_and_training_starts_over(tiny, tmp_path):
    task, dense = tiny
    make = CONFIGS["movement"]
    whole, rep_whole = _prune(make, dense, task)
    checkpoint = tmp_path / "p.partial.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    seen = []
    with pytest.warns(CheckpointWarning, match="could not be used.*training movement from the start"):
        model, rep = _prune(make, dense, task, checkpoint, lambda step, *a: seen.append(step))
    assert seen[0] == 1 and "resumed_from_step" not in rep.notes["training_speed"]
    _assert_same(whole, model, rep_whole, rep)


@pytest.mark.parametrize("other", ["parameters", "starting weights"])
def test_a_checkpoint_of_another_configuration_is_not_used(tiny, tmp_path, other):
    task, dense = tiny
    make = CONFIGS["gmp"]
    checkpoint = tmp_path / "p.partial.pt"
    _interrupt(make, dense, task, checkpoint, 5)
    kw, start = {}, dense
    if other == "parameters":
        kw = {"seed": 1}
    else:
        start = copy.deepcopy(dense)
        with torch.no_grad():
            start.classifier.bias.add_(1.0)
    whole, rep_whole = _prune(make, start, task, **kw)
    seen = []
    with pytest.warns(CheckpointWarning, match="another configuration"):
        model, rep = _prune(make, start, task, checkpoint, lambda step, *a: seen.append(step), **kw)
    assert seen[0] == 1
    _assert_same(whole, model, rep_whole, rep)


def test_a_checkpoint_that_cannot_be_restored_leaves_the_start_untouched(tiny, tmp_path):
    """A file of this configuration whose parts do not fit (code changed under it): the weights it
    already loaded are put back to the dense ones and training starts over."""
    task, dense = tiny
    make = CONFIGS["movement"]
    whole, rep_whole = _prune(make, dense, task)
    checkpoint = tmp_path / "p.partial.pt"
    _interrupt(make, dense, task, checkpoint, 5)
    state = torch.load(checkpoint, weights_only=True)
    state["score"]["S"] = torch.zeros(3)  # restored after the model and the optimizer
    torch.save(state, checkpoint)
    seen = []
    with pytest.warns(CheckpointWarning, match="could not be restored"):
        model, rep = _prune(make, dense, task, checkpoint, lambda step, *a: seen.append(step))
    assert seen[0] == 1
    _assert_same(whole, model, rep_whole, rep)


def test_the_runner_resumes_a_killed_pruner_and_deletes_its_checkpoint(tmp_path):
    from profiler.config import parse_config
    from profiler.runner import Reporter, Runner
    from safetensors.torch import load_file
    from tests.conftest import tiny_config

    class StopPruning(Reporter):
        def training(self, label):
            def progress(step, total, loss, *rest):
                if label.startswith("pruning") and step == 3:
                    raise KeyboardInterrupt
            return progress

    cfg = parse_config(tiny_config(
        # fixed: else each Runner trains with the threads torch has when it starts, which the run before changed
        run={"name": "t", "training_threads": 1},
        tasks=[{"name": "tiny-synthetic", "finetune_steps": 10, "n_train": 128, "n_eval": 16, "finetune_precision": "fp32"}],
        pruners=[{"name": "gmp", "sparsity": 0.8, "steps": 6, "batch_size": 8, "update_every": 2, "distill": True,
                  "ema_decay": 0.5, "precision": "fp32"}],
        accelerators=[{"name": "torch-fp32"}],
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1]},
    ))
    Runner(cfg, tmp_path / "a", cache_dir=tmp_path / "cache-a", reporter=Reporter()).run()
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg, tmp_path / "b", cache_dir=tmp_path / "cache-b", reporter=StopPruning()).run()
    [partial] = (tmp_path / "cache-b" / "pruned").glob("*.partial.pt")
    assert torch.load(partial, weights_only=True)["step"] == 3
    Runner(cfg, tmp_path / "b", cache_dir=tmp_path / "cache-b", reporter=Reporter()).run()
    assert not partial.exists()  # the pruned model is stored: its checkpoint is gone
    [a], [b] = [[p for p in (tmp_path / c / "pruned").iterdir()] for c in ("cache-a", "cache-b")]
    assert a.name == b.name and partial.name == b.name + ".partial.pt"
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((p / "prune_report.json").read_text()) for p in (a, b))
    assert rb["notes"]["training_speed"]["resumed_from_step"] == 3
    assert _without_clock(ra) == _without_clock(rb)
    rows = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"]


def test_the_cli_prints_a_checkpoint_warning_as_one_line(capsys):
    from profiler.cli import warning_printer

    show = warning_printer(lambda *a: pytest.fail("handed to the fallback"))
    show(CheckpointWarning("training checkpoint x could not be used"), CheckpointWarning, "gmp.py", 1)
    assert capsys.readouterr().err == "sparsebench: warning: training checkpoint x could not be used\n"


def test_a_save_removes_what_a_killed_save_left_and_nothing_else(tmp_path):
    import os
    import subprocess
    import sys

    from pruners.training import ORPHAN_AGE_S, save_checkpoint

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process
    old = os.path.getmtime(tmp_path) - 2 * ORPHAN_AGE_S
    files = {name: tmp_path / name for name in (
        f"p.pt.tmp-{gone.pid}",          # a killed writer's, long untouched: removed
        f"p.pt.tmp-{gone.pid}x",         # not a pid
        f"p.pt.tmp-{os.getppid()}",      # a live writer's
        f"q.pt.tmp-{gone.pid}",          # another checkpoint's
    )}
    for f in files.values():
        f.write_bytes(b"half")
        os.utime(f, (old, old))
    recent = tmp_path / f"p.pt.tmp-{gone.pid + 100000}"  # written just now: maybe another machine's writer
    recent.write_bytes(b"half")
    save_checkpoint(tmp_path / "p.pt", {"step": 1})
    assert not files[f"p.pt.tmp-{gone.pid}"].exists()
    assert all(f.exists() for n, f in files.items() if n != f"p.pt.tmp-{gone.pid}") and recent.exists()
    assert torch.load(tmp_path / "p.pt", weights_only=True) == {"step": 1}


def test_discarding_a_checkpoint_takes_what_killed_saves_of_it_left(tmp_path):
    import os
    import subprocess
    import sys

    from pruners.training import ORPHAN_AGE_S, discard_checkpoint, save_checkpoint

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = tmp_path / "m.partial.pt"
    save_checkpoint(path, {"step": 3})
    orphan = tmp_path / f"m.partial.pt.tmp-{gone.pid}"
    orphan.write_bytes(b"half")
    old = os.path.getmtime(orphan) - 2 * ORPHAN_AGE_S
    os.utime(orphan, (old, old))
    discard_checkpoint(path)
    assert not path.exists() and not orphan.exists()
    discard_checkpoint(path)  # nothing there: no error
