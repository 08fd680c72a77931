"""GMP and movement pruners: score hand computation, exact final sparsity, config validation,
notes with the training budget, progress callback, runner integration."""
import copy

import pytest
import torch
from torch import nn

from profiler.config import parse_config
from profiler.errors import ConfigError
from profiler.tasks import TinySynthetic
from pruners.base import prunable_linears
from pruners.masks import MaskSet
from pruners.gmp import GMPPruner
from pruners.movement import MovementPruner
from pruners.scores import MagnitudeScore, MovementScore
from tests.conftest import tiny_config


def test_movement_scores_accumulate_minus_w_times_grad_by_hand():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
    score = MovementScore({"l": lin}, optimizer="sum")
    x = torch.tensor([[1.0, 2.0, -1.0]])
    expected = torch.zeros(2, 3)
    for _ in range(2):
        W = lin.weight.detach().clone()
        y = W @ x[0]  # loss = sum(y²)  =>  dL/dW = 2·y·xᵀ
        grad = 2 * y[:, None] * x[0][None, :]
        expected -= W * grad
        lin.weight.grad = None
        (lin(x) ** 2).sum().backward()
        assert torch.allclose(lin.weight.grad, grad)
        score.accumulate()
        with torch.no_grad():
            lin.weight -= 0.01 * lin.weight.grad  # the weights move between steps
    assert torch.allclose(score.scores()["l"], expected)
    # first step by hand: W=[[1,-2,.5],[0,3,-1]], y=[-3.5, 7], grad row0 = -7·x, row1 = 14·x
    first = -torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]) * torch.tensor([[-7.0, -14.0, 7.0], [14.0, 28.0, -14.0]])
    assert first[0].tolist() == [7.0, -28.0, -3.5]


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=0, n_train=256, n_eval=32)
    return task, task.base_model()


@pytest.mark.parametrize(
    "cls, kw",
    [
        (GMPPruner, dict(sparsity=0.8)),
        (GMPPruner, dict(sparsity=0.5, structure="2:4", scope="global")),
        (MovementPruner, dict(sparsity=0.9, variant="hard")),
        (MovementPruner, dict(sparsity=0.9, variant="soft", structure="4x1")),
    ],
)
def test_training_pruners_reach_exact_sparsity(tiny, cls, kw):
    task, dense = tiny
    model = copy.deepcopy(dense)
    seen = []
    p = cls(steps=10, update_every=2, batch_size=8, **kw)
    rep = p.prune(model, task, progress=lambda step, total, loss, sparsity: seen.append((step, total, sparsity)))
    # the masks' own sparsity (each layer rounds its count of zeros): the target within rounding
    assert seen[-1][:2] == (10, 10) and seen[-1][2] == pytest.approx(kw["sparsity"], abs=1e-4)
    assert [s for _, _, s in seen] == sorted(s for _, _, s in seen)  # sparsity only grows
    total = sum(l.weight.numel() for l in prunable_linears(model).values())
    if kw.get("scope", "layer") == "layer" and kw.get("variant") != "soft":
        for name, ls in rep.per_layer.items():
            assert ls.zeros == round(kw["sparsity"] * ls.numel), name
    assert abs(rep.prunable_zeros - kw["sparsity"] * total) <= 4 * len(rep.per_layer)
    assert int((model.classifier.weight == 0).sum()) == 0  # classifier trained, not pruned
    n = rep.notes
    assert n["training"]["steps"] == 10 and n["training"]["batch_size"] == 8 and n["training"]["lr"] == p.lr
    assert n["wall_time_s"] >= 0 and n["final_sparsity"] == kw["sparsity"]
    assert (n["distillation"] != False) == p.distill  # noqa: E712
    assert not model.training


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(sparsity=1.0), "sparsity"),
        (dict(steps=0), "steps"),
        (dict(end_frac=0.0), "end_frac"),
        (dict(lr=0), "lr"),
        (dict(warmup_steps=5000), "warmup_steps"),
        (dict(temperature=0), "temperature"),
        (dict(alpha=1.5), "alpha"),
        (dict(distill="yes"), "distill"),
        (dict(structure="3x"), "structure"),
        (dict(sparsity=0.9, structure="2:4"), "1 - N/M"),
        (dict(scope="model"), "scope"),
        (dict(roles=["ffn"]), "roles"),
        (dict(roles="attn_q"), r"roles must be a list of role names, got the string .attn_q.; e.g. \[.attn_q.\]"),
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(ema_decay=-0.1), "ema_decay"),
        (dict(min_keep=0.05), "min_keep.*global"),
        (dict(sparsity=0.9, scope="global", min_keep=0.2), r"min_keep must be in \[0, 1 - sparsity\] = \[0, 0.1\] at sparsity 0.9"),
        (dict(sparsity=0.5, structure="2:4", scope="global", min_keep=0.1), "min_keep.*N:M"),
        (dict(scope="global", min_keep=-0.01), "min_keep"),
    ],
)
def test_constructor_validation_names_the_param(kw, match):
    with pytest.raises(ValueError, match=match):
        GMPPruner(**kw)


def test_min_keep_scope_follows_the_ranking_the_variant_uses():
    """Soft movement ranks all matrices under one threshold whatever ``scope`` says, so its floor is
    accepted under the default scope; hard movement ranks per ``scope`` like GMP."""
    assert MovementPruner(sparsity=0.9, min_keep=0.05).min_keep == 0.05  # soft, scope "layer"
    with pytest.raises(ValueError, match="min_keep.*global"):
        MovementPruner(variant="hard", sparsity=0.9, min_keep=0.05)
    assert MovementPruner(variant="hard", sparsity=0.9, scope="global", min_keep=0.05).min_keep == 0.05


@pytest.mark.parametrize("cls, kw", [(GMPPruner, dict(structure="1x4")), (GMPPruner, dict()),
                                     (MovementPruner, dict(variant="hard", structure="1x4"))])
def test_global_min_keep_caps_every_layer_and_keeps_the_total(cls, kw):
    """A layer whose weights are all the smallest would be emptied by one global ranking at 75 %;
    with min_keep = 0.1 it keeps int(0.1·groups) + 1 groups and the other layer pays for them."""
    torch.manual_seed(0)
    a, b = nn.Linear(16, 8, bias=False), nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        a.weight.uniform_(1.0, 2.0)
        b.weight.uniform_(-1e-3, 1e-3)
    layers = {"a": a, "b": b}
    groups = 32 if kw.get("structure") == "1x4" else 128
    for min_keep, floor in ((0.0, 0), (0.1, int(0.1 * groups) + 1)):
        p = cls(sparsity=0.75, scope="global", min_keep=min_keep, **kw)
        keep = p.select(MagnitudeScore(layers), 0.75)
        per = 4 if kw.get("structure") == "1x4" else 1
        assert int(keep["b"].sum()) == floor * per
        assert int(keep["a"].sum()) + int(keep["b"].sum()) == 64  # 25 % of 256 weights kept either way
    assert p.describe()["min_keep"] == 0.1
    assert GMPPruner(sparsity=0.9, scope="global", min_keep=0.1).min_keep == 0.1  # the bound itself, 1 - 0.9


def test_movement_declares_the_training_parameters_once():
    from profiler.plugins import PRUNERS

    gmp, mov = PRUNERS.params("gmp"), PRUNERS.params("movement")
    assert set(gmp) < set(mov) and set(mov) - set(gmp) == {"variant", "init", "score_optimizer", "score_lr",
                                                           "final_lambda", "final_threshold"}
    paper = {"start_frac": 0.1, "end_frac": 0.8, "update_every": 1, "distill": True}
    assert all(mov[k].default == v for k, v in paper.items())
    assert all(mov[k].default == gmp[k].default for k in gmp if k not in paper)
    assert PRUNERS.hints("movement")["score_lr"] is float and PRUNERS.hints("movement")["steps"] is int
    p = MovementPruner(sparsity=0.5, steps=20)
    assert (p.sparsity, p.steps, p.start_frac, p.distill, p.variant, p.init) == (0.5, 20, 0.1, True, "soft", "finetuned")


def test_movement_validation():
    with pytest.raises(ValueError, match="variant"):
        MovementPruner(variant="medium")
    with pytest.raises(ValueError, match="start_frac"):
        MovementPruner(start_frac=0.0)
    with pytest.raises(ValueError, match="init must be one of: pretrained, finetuned"):
        MovementPruner(init="random")
    with pytest.raises(ValueError, match="score_optimizer must be one of: adam, sum"):
        MovementPruner(score_optimizer="sgd")
    with pytest.raises(ValueError, match="score_lr"):
        MovementPruner(score_lr=0)


def test_movement_adam_scores_by_hand():
    """Adam on S with the straight-through gradient dL/dS = W * dL/dW (paper eq. 4, score lr 1e-2)."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3, bias=False)
    score = MovementScore({"l": lin}, optimizer="adam", lr=1e-2)
    m = v = S = torch.zeros(3, 4)
    for t in range(1, 4):
        x = torch.randn(2, 4)
        lin.weight.grad = None
        (lin(x) ** 2).sum().backward()
        up = -(lin.weight.detach() * lin.weight.grad)
        m = 0.9 * m + 0.1 * up
        v = 0.999 * v + 0.001 * up * up
        S = S + 1e-2 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        score.accumulate()
        with torch.no_grad():
            lin.weight -= 0.05 * lin.weight.grad
    assert torch.allclose(score.scores()["l"], S, atol=1e-7)
    assert score.describe()["score_optimizer"] == "adam"
    # the first Adam step moves every score by lr in the sign of -W*dL/dW, whatever its size
    first = MovementScore({"l": lin}, optimizer="adam", lr=1e-2)
    lin.weight.grad = None
    (lin(torch.randn(2, 4)) ** 2).sum().backward()
    up = -(lin.weight.detach() * lin.weight.grad)
    first.accumulate()
    assert torch.allclose(first.scores()["l"], 1e-2 * torch.sign(up), atol=1e-6)


def test_movement_pruned_weight_keeps_latent_value_and_regrows_with_it():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]]))
    masks = MaskSet({"l": lin})
    score = MovementScore({"l": lin}, optimizer="sum")
    drop = torch.tensor([[True, False, True], [True, True, True]])
    score.update_masks(masks, {"l": drop}, None, 1 / 6)
    assert lin.weight[0, 1] == 0.0
    # the pruned weight's score still moves, with its latent value -2.0
    lin.weight.grad = torch.full((2, 3), 0.5)
    score.accumulate()
    assert score.scores()["l"][0, 1] == pytest.approx(-(-2.0) * 0.5)
    assert score.scores()["l"][0, 0] == pytest.approx(-1.0 * 0.5)
    with torch.no_grad():
        lin.weight[0, 0] = 1.5  # a kept weight trains on
    score.update_masks(masks, {"l": torch.ones(2, 3, dtype=torch.bool)}, None, 0.0)
    assert lin.weight[0, 1] == -2.0 and lin.weight[0, 0] == 1.5 and score.describe()["regrown_weights"] == 1


def test_movement_starts_from_the_finetuned_model_by_default(tiny):
    task, _ = tiny
    finetuned = task.base_model()
    with torch.no_grad():
        for p in finetuned.parameters():
            p.add_(1.0)
    pre = task.base_model().state_dict()
    student = copy.deepcopy(finetuned)
    MovementPruner(init="pretrained").init_student(student, task)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in pre.items())
    student = copy.deepcopy(finetuned)
    MovementPruner().init_student(student, task)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in finetuned.state_dict().items())


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"pruners\[1\].*alpha"):
        parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "gmp", "alpha": 2.0}]))
    with pytest.raises(ConfigError, match=r"pruners\[0\]\.epochs.*valid parameters"):
        parse_config(tiny_config(pruners=[{"name": "movement", "epochs": 2}]))


def test_runner_trains_caches_and_reports(tmp_path):
    from profiler.runner import Reporter, Runner

    class Rec(Reporter):
        calls = []

        def training(self, label):
            return lambda *a: self.calls.append((label, a))

    cfg = parse_config(tiny_config(
        tasks=[{"name": "tiny-synthetic", "finetune_steps": 20, "n_train": 256, "n_eval": 32}],
        pruners=[{"name": "gmp", "sparsity": 0.9, "steps": 6, "batch_size": 8, "update_every": 2, "distill": True, "ema_decay": 0.5}],
        accelerators=[{"name": "torch-fp32"}],
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1]},
    ))
    Runner(cfg, tmp_path / "run", cache_dir=tmp_path / "cache", reporter=Rec()).run()
    assert any(label.startswith("pruning gmp") and a[0] == 6 and a[3] == pytest.approx(0.9, abs=1e-4)
               for label, a in Rec.calls)
    [saved] = list((tmp_path / "cache" / "pruned").iterdir())
    import json

    rep = json.loads((saved / "prune_report.json").read_text())
    assert rep["sparsity_prunable"] == pytest.approx(0.9, abs=1e-3)
    assert rep["notes"]["training"]["steps"] == 6 and rep["notes"]["distillation"] == {"temperature": 2.0, "alpha": 0.9, "hidden_weight": 0.0, "attention_weight": 0.0, "augment": 0.0}
    rows = [json.loads(l) for l in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["status"] == "ok" and rows[0]["sparsity_prunable"] == pytest.approx(0.9, abs=1e-3)
    assert rows[0]["pruner_weight_average"]["steps_averaged"] == 6 - 4  # end_step = round(0.7 · 6)


def test_training_runs_at_training_threads_for_every_task_not_at_the_last_timed_cells(tmp_path):
    """The matrix's threads = 1 is set for timing the first task; the second task's fine-tuning
    and pruning still run at run.training_threads."""
    import json

    from profiler.runner import Reporter, Runner

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the default a run without training_threads would keep
        cfg = parse_config(tiny_config(
            run={"name": "t", "training_threads": 2},
            tasks=[{"name": "tiny-synthetic", "finetune_steps": 4, "n_train": 64, "n_eval": 16, "seed": s} for s in (0, 1)],
            pruners=[{"name": "gmp", "sparsity": 0.5, "steps": 2, "batch_size": 8, "update_every": 1}],
            accelerators=[{"name": "torch-fp32"}],
            matrix={"batch_size": [1], "seq_len": [16], "threads": [1]},
        ))
        Runner(cfg, tmp_path / "run", cache_dir=tmp_path / "cache", reporter=Reporter()).run()
    finally:
        torch.set_num_threads(before)
    reports = [json.loads((p / "prune_report.json").read_text()) for p in (tmp_path / "cache" / "pruned").iterdir()]
    assert len(reports) == 2 and [r["notes"]["training_speed"]["threads"] for r in reports] == [2, 2]
    rows = [json.loads(l) for l in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["torch_threads"] == 1 for r in rows)
    assert {r["dense_finetune"]["threads"] for r in rows} == {2}
    with pytest.raises(ConfigError, match=r"run\.training_threads: must be an integer in \[1, 256\]"):
        parse_config(tiny_config(run={"name": "t", "training_threads": 0}))


def test_ema_gives_the_model_the_moving_average_of_the_recovery_weights_with_masks_exact(tiny):
    task, dense = tiny
    model = copy.deepcopy(dense)
    d, snaps = 0.7, []
    p = GMPPruner(sparsity=0.8, steps=10, end_frac=0.5, update_every=1, batch_size=8, ema_decay=d)

    def progress(step, total, loss, sparsity):  # called after each step (and its average update)
        if step - 1 >= p.end_step:
            snaps.append({n: t.detach().clone() for n, t in model.named_parameters()})

    rep = p.prune(model, task, progress=progress)
    assert len(snaps) == 10 - p.end_step == rep.notes["weight_average"]["steps_averaged"]
    expected = dict(snaps[0])
    for snap in snaps[1:]:
        expected = {n: d * expected[n] + (1 - d) * snap[n] for n in expected}
    for n, t in model.named_parameters():
        assert torch.allclose(t, expected[n], rtol=1e-5, atol=1e-6), n
    assert not torch.equal(model.classifier.weight, snaps[-1]["classifier.weight"])  # not the last weights
    for name, ls in rep.per_layer.items():
        assert ls.zeros == round(0.8 * ls.numel), name  # the average keeps every masked weight at exactly 0
    avg = rep.notes["weight_average"]
    assert avg["decay"] == d and avg["from_step"] == p.end_step and 0.0 <= avg[f"{task.metric_name}_last_weights"] <= 1.0
    assert rep.notes["training"]["ema_decay"] == d
    assert "weight_average" not in GMPPruner(sparsity=0.5, steps=2, batch_size=8).prune(copy.deepcopy(dense), task).notes
