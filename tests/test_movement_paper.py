"""Movement pruning as the paper trains it (Sanh et al. 2020): the straight-through gradient on S
against autograd, soft movement's penalty and schedules (golden values), exact final sparsity of
both soft modes, the hard schedule's dense warm-up and fixed cool-down, per-layer floors, exact
zeros, and the top-k selection against a stable sort."""
import copy

import pytest
import torch
from torch import nn

from profiler.tasks import TinySynthetic
from pruners.base import _keep_mask, prunable_linears
from pruners.masks import MaskSet
from pruners.movement import MovementPruner
from pruners.training import linear_decay_factor
from pruners.movement_masks import Sampler, threshold_masks
from pruners.scores import MovementScore
from pruners.structure import parse_structure


class _StraightThrough(torch.autograd.Function):
    """The paper's binariser: forward the fixed 0/1 mask, backward the gradient unchanged to S."""

    @staticmethod
    def forward(ctx, S, keep):
        return keep.to(S.dtype)

    @staticmethod
    def backward(ctx, g):
        return g, None


def test_score_gradient_is_straight_through_dL_dWprime_times_W_plus_penalty_against_autograd():
    torch.manual_seed(0)
    lins = {"a": nn.Linear(5, 4, bias=False), "b": nn.Linear(4, 3, bias=False)}
    W = {n: l.weight.detach().clone() for n, l in lins.items()}
    keep = {n: torch.rand(W[n].shape) > 0.4 for n in W}
    S0 = {n: torch.randn(W[n].shape) for n in W}
    lam = 3.0
    x = torch.randn(6, 5)

    # reference: latent W, scores S as leaves, W' = W * STE(S), L + lam * mean_l sum(sigmoid(S_l)) / numel_l
    S_ref = {n: S0[n].clone().requires_grad_(True) for n in W}
    Wp = {n: W[n] * _StraightThrough.apply(S_ref[n], keep[n]) for n in W}
    loss = ((x @ Wp["a"].T) @ Wp["b"].T).pow(2).sum()
    reg = sum(torch.sigmoid(S_ref[n]).sum() / S_ref[n].numel() for n in W) / len(W)
    (loss + lam * reg).backward()

    # ours: pruned weights are exact zeros in the model, their latent values live in the score
    score = MovementScore(lins, optimizer="sum")
    score.update_masks(MaskSet(lins), keep, None, 0.4)
    assert all(bool((lins[n].weight[~keep[n]] == 0).all()) for n in W)
    for n in W:
        score.S[n].copy_(S0[n])
    lins["b"](lins["a"](x)).pow(2).sum().backward()
    for n in W:
        assert torch.allclose(score.gradient(n, lam), S_ref[n].grad, atol=1e-6), n
        assert torch.allclose(score.gradient(n, 0.0), lins[n].weight.grad * W[n], atol=1e-6), n


def test_score_adam_lr_follows_the_weights_schedule():
    lin = nn.Linear(3, 2, bias=False)
    score = MovementScore({"l": lin}, optimizer="adam", lr=1e-2, lr_factor=lambda t: 0.25 if t == 0 else 1.0)
    lin.weight.grad = torch.ones(2, 3)
    score.accumulate()  # Adam's first step moves each score by lr·factor against the sign of its gradient
    assert torch.allclose(score.S["l"], -0.25e-2 * torch.sign(lin.weight.detach()), atol=1e-7)
    lr_factor = linear_decay_factor(0, 100)
    assert lr_factor(0) == 1.0 and lr_factor(50) == 0.5 and lr_factor(99) == 0.01
    lr_factor = linear_decay_factor(4, 100)
    assert lr_factor(0) == 0.25 and lr_factor(3) == 1.0 and lr_factor(52) == 0.5


def test_soft_penalty_and_threshold_schedules_golden_values():
    p = MovementPruner(sparsity=0.9, steps=100, final_lambda=400.0, final_threshold=0.1)
    assert (p.start_step, p.schedule.end_step) == (10, 80)
    golden = {0: 0.0, 9: 0.0, 10: 0.0, 17: 108.4, 45: 350.0, 79: 400.0 * (1 - (1 / 70) ** 3), 80: 400.0, 99: 400.0}
    for step, lam in golden.items():
        assert p.lambda_at(step) == pytest.approx(lam, rel=1e-9, abs=1e-12), step
    assert p.threshold_at(p.schedule.sparsity_at(45)) == pytest.approx(0.0875)
    assert p.threshold_at(p.schedule.sparsity_at(5)) == 0.0 and p.threshold_at(0.9) == pytest.approx(0.1)
    assert MovementPruner(sparsity=0.9, steps=100).final_lambda == 400.0  # the paper's value by default
    assert MovementPruner(variant="hard").final_lambda == 0.0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(variant="hard", final_lambda=1.0), "final_lambda applies to variant 'soft'"),
        (dict(variant="hard", final_threshold=0.1), "final_threshold"),
        (dict(final_threshold=0.1, structure="4x1"), "structure 'unstructured'"),
        (dict(final_threshold=1.0), "final_threshold"),
        (dict(final_threshold=0.0), "final_threshold"),
        (dict(final_lambda=-1.0), "final_lambda"),
        (dict(score_lr=0.0), "score_lr"),
        (dict(variant="soft", sparsity=0.998), "sparsity must be <= 0.995"),
    ],
)
def test_movement_validation_names_the_param(kw, match):
    with pytest.raises(ValueError, match=match):
        MovementPruner(**kw)
    MovementPruner(variant="hard", sparsity=0.998)  # no per-layer floor there


def test_pretrained_init_keeps_the_pruners_seed_for_dropout():
    """init = "pretrained" rebuilds the base model, which seeds torch: not the dropout stream after it."""
    task = TinySynthetic(finetune_steps=0, n_train=32, hidden_size=32, intermediate_size=64)
    draws = []
    for seed in (0, 1):
        p = MovementPruner(init="pretrained", seed=seed, steps=10, sparsity=0.5)
        model = task.base_model()
        torch.manual_seed(p.seed)  # as TrainingPruner.prune does before init_student
        p.init_student(model, task)
        draws.append(torch.rand(3))
    assert not torch.equal(draws[0], draws[1])


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=40, n_train=256, n_eval=32)
    return task, task.load_finetuned()


def _zeros(model):
    return {n: (lin.weight == 0) for n, lin in prunable_linears(model).items()}


@pytest.mark.parametrize("threshold", [None, 0.1])
def test_soft_movement_reaches_exactly_the_target_with_masks_moving_every_step(tiny, threshold):
    task, dense = tiny
    model = copy.deepcopy(dense)
    total = sum(l.weight.numel() for l in prunable_linears(model).values())
    seen = []
    p = MovementPruner(variant="soft", sparsity=0.9, steps=20, batch_size=8, final_threshold=threshold)
    rep = p.prune(model, task, progress=lambda step, tot, loss, s: seen.append((step, s, _zeros(model))))
    assert rep.prunable_zeros == round(0.9 * total)  # global count, exact
    for n, z in _zeros(model).items():  # the report counts the model's exact zeros
        assert int(z.sum()) == rep.per_layer[n].zeros and int(z.sum()) < z.numel()  # no layer emptied
    if threshold is None:  # calibrated: every step of the ramp at the schedule's sparsity (exact: the sample covers all)
        assert all(sum(int(m.sum()) for m in z.values()) == round(s * total) for _, s, z in seen)
        assert 0 < rep.notes["soft"]["final_sigmoid_threshold"] < 1
    else:
        before = rep.notes["soft"]["sparsity_before_final_adjustment"]
        assert isinstance(before, float) and 0.0 <= before <= 1.0
    assert rep.notes["soft"]["final_lambda"] == 400.0 and rep.notes["masks_during_cool_down"] == "fixed"


def test_hard_movement_dense_warm_up_ramp_and_fixed_cool_down(tiny):
    task, dense = tiny
    model = copy.deepcopy(dense)
    seen = []
    p = MovementPruner(variant="hard", sparsity=0.8, steps=20, batch_size=8)
    assert (p.start_step, p.schedule.end_step) == (2, 16)
    rep = p.prune(model, task, progress=lambda step, tot, loss, s: seen.append((step, s, _zeros(model))))
    warm = [z for step, _, z in seen if step <= p.start_step]  # after steps 0 and 1: no mask yet
    assert len(warm) == 2 and all(int(m.sum()) == 0 for z in warm for m in z.values())
    ramp = [s for step, s, _ in seen if p.start_step < step <= p.schedule.end_step]
    assert ramp == sorted(ramp) and 0 < ramp[1] < 0.8
    cool = [z for step, _, z in seen if step > p.schedule.end_step]  # after steps 16..19: one fixed mask
    assert len(cool) == 4 and all(torch.equal(z[n], cool[0][n]) for z in cool for n in z)
    for n, m in cool[-1].items():
        assert int(m.sum()) == round(0.8 * m.numel()) == rep.per_layer[n].zeros, n
    assert rep.notes["mean_abs_weight_pruned"] >= 0 and rep.notes["mean_abs_weight_kept"] > 0


def test_keep_mask_equals_a_stable_sort():
    def by_sort(scores, k):
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[torch.sort(scores, stable=True).indices[:k]] = False
        return keep

    g = torch.Generator().manual_seed(0)
    for trial in range(2000):
        n = int(torch.randint(1, 50, (1,), generator=g))
        s = torch.randint(0, 4, (n,), generator=g).float() if trial % 2 else torch.randn(n, generator=g)
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        assert torch.equal(_keep_mask(s, k), by_sort(s, k)), (s, k)
    with pytest.raises(ValueError, match="NaN"):
        _keep_mask(torch.tensor([1.0, float("nan")]), 1)


def test_per_layer_floor_under_one_global_threshold():
    low, high = torch.full((10, 50), -5.0), torch.randn(10, 50)
    # global selection at 90 %: the low layer would lose everything; its 3 best weights stay
    keep = parse_structure("unstructured").masks({"low": low, "high": high}, 0.9, "global", min_keep=0.005)
    assert int(keep["low"].sum()) == int(0.005 * 500) + 1 == 3
    assert int(keep["low"].sum() + keep["high"].sum()) == 100  # the total stays exact
    keep = threshold_masks({"low": low, "high": high}, 0.5)
    assert int(keep["low"].sum()) == 3 and torch.equal(keep["high"], high > 0)
    assert all(bool(m.all()) for m in threshold_masks({"low": low}, 0.0).values())
    with pytest.raises(ValueError, match="min_keep"):
        parse_structure("unstructured").masks({"low": low}, 0.5, "global", min_keep=1.0)


def test_sampled_cut_is_near_the_target_and_exact_when_ties_would_fool_it():
    torch.manual_seed(0)
    lin = nn.Linear(1000, 200, bias=False)
    score = MovementScore({"a": lin, "b": nn.Linear(200, 50, bias=False)})
    score.flat_S.copy_(torch.randn(score.flat_S.numel()))
    sampler, n = Sampler(seed=1), score.flat_S.numel()
    for s in (0.3, 0.9):
        keep = sampler.cut(score.flat_S, round(s * n), 4096)
        assert abs(int((~keep).sum()) - s * n) <= 4 * (s * (1 - s) / 4096) ** 0.5 * n + 1
        keep = sampler.keep(score, s, "layer")
        assert set(keep) == {"a", "b"} and all(abs(1 - float(m.float().mean()) - s) < 0.02 for m in keep.values())
    score.flat_S.zero_()
    score.flat_S[: n // 2] = 1.0  # half the scores tie at 0: a sampled cut at 0 would drop all of them
    assert sampler.cut(score.flat_S, round(0.3 * n), 4096) is None
    assert int((~sampler.keep(score, 0.3, "layer")["a"]).sum()) == round(0.3 * 200_000)  # exact fallback


def test_labels_name_the_variant_and_non_default_soft_settings():
    from profiler.labels import plugin_label

    base = {"sparsity": 0.95, "distill": True, "init": "finetuned", "final_lambda": None, "final_threshold": None}
    assert plugin_label("movement", {**base, "variant": "soft"}) == "movement 0.95 soft KD"
    assert plugin_label("obs", {"sparsity": 0.9, "structure": "1x4", "distill": True, "hidden_distill": 5.0}) == \
        "obs 0.9 1x4 KD +hidden 5"
    assert plugin_label("obs", {"sparsity": 0.9, "distill": True, "hidden_distill": 0.0}) == "obs 0.9 KD"
    assert plugin_label("obs", {"sparsity": 0.9, "distill": True, "hidden_distill": 1.0, "attention_distill": 2.0}) == \
        "obs 0.9 KD +hidden 1 +attention 2"
    assert plugin_label("obs", {"sparsity": 0.8, "steps": 0, "distill": True}) == "obs 0.8"  # one-shot: nothing distilled
    assert plugin_label("obs", {"sparsity": 0.9, "scope": "global", "lr_schedule": "cyclic"}) == "obs 0.9 global cyclic"
    assert plugin_label("obs", {"sparsity": 0.9, "lr_schedule": "linear"}) == "obs 0.9"
    assert plugin_label("movement", {**base, "variant": "hard", "init": "pretrained"}) == "movement 0.95 hard from pretrained KD"
    assert plugin_label("movement", {**base, "variant": "soft", "final_lambda": 4000.0, "final_threshold": 0.1}) == \
        "movement 0.95 soft lambda 4000 tau 0.1 KD"
