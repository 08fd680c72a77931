"""The Optimal BERT Surgeon (``obs``): block Fisher inverse and OBS update against a dense float64
reference, 1×4 group selection, one-shot and gradual pruning of the tiny model, validation."""
import copy

import pytest
import torch
from torch import nn

from profiler.config import parse_config
from profiler.errors import ConfigError
from profiler.tasks import TinySynthetic
from pruners.base import prunable_linears
from pruners.fisher import BlockFisherInverse, obs_update, saliency
from pruners.masks import MaskSet, assert_plain
from pruners.obs import OBSPruner, OBSScore, RisingCubic
from pruners.structure import parse_structure
from tests.conftest import tiny_config

F64 = torch.float64


def dense_fisher_blocks(grads: torch.Tensor, block: int, damp: float) -> list[torch.Tensor]:
    """``λI + Gᵀ G / m`` per Fisher block (float64), from ``grads`` ``(m, numel)``, zero-padded."""
    m, numel = grads.shape
    pad = -numel % block
    g = torch.nn.functional.pad(grads.to(F64), (0, pad)).reshape(m, -1, block)
    return [damp * torch.eye(block, dtype=F64) + g[:, b].T @ g[:, b] / m for b in range(g.shape[1])]


def fisher_of(grads: torch.Tensor, block: int, damp: float, chunk: int, dtype=F64, method="direct") -> BlockFisherInverse:
    f = BlockFisherInverse(grads.shape[1], block, damp, grads.shape[0], dtype=dtype, method=method)
    for s in range(0, grads.shape[0], chunk):
        f.add_grads(grads[s : s + chunk])
    return f


@pytest.mark.parametrize("method", ["direct", "woodbury"])
@pytest.mark.parametrize("chunk", [1, 3, 8, 40])
def test_fisher_inverse_equals_dense_inverse(chunk, method):
    torch.manual_seed(0)
    grads = torch.randn(40, 6 * 7, dtype=F64)  # 42 weights, B = 16: the last block is padded
    f = fisher_of(grads, 16, 1e-2, chunk, method=method)
    assert f.finv.shape == (3, 16, 16) and f.grads_added == 40
    for b, F in enumerate(dense_fisher_blocks(grads, 16, 1e-2)):
        ref = torch.linalg.inv(F)
        assert torch.allclose(f.finv[b], ref, rtol=1e-9, atol=1e-9 * ref.abs().max()), b
    assert torch.allclose(f.finv[2, 10:, 10:], torch.eye(6, dtype=F64) / 1e-2)  # padding: 1/λ, decoupled
    assert f.nbytes == 3 * 16 * 16 * 8


@pytest.mark.parametrize("method", ["direct", "woodbury"])
def test_fisher_inverse_float32_close_to_reference(method):
    torch.manual_seed(1)
    grads = torch.randn(64, 96) * 1e-2
    f = fisher_of(grads, 32, 1e-5, 8, dtype=torch.float32, method=method)
    for b, F in enumerate(dense_fisher_blocks(grads, 32, 1e-5)):
        ref = torch.linalg.inv(F)
        assert (f.finv[b].double() - ref).abs().max() <= 1e-3 * ref.abs().max(), b


def test_float32_fisher_of_fewer_gradients_than_its_block_keeps_a_positive_inverse_diagonal():
    """m < B at the paper's λ = 1e-7: Σ g gᵀ is rank-deficient and its float32 round-off exceeds
    λ, so the stored block is indefinite; its inverse must still have [F⁻¹]_ii > 0 (a saliency
    w²/(2[F⁻¹]_ii) of the right sign), near the float64 one."""
    g = torch.randn(16, 48, generator=torch.Generator().manual_seed(0))
    f32, f64 = BlockFisherInverse(48, 48, 1e-7, 16), BlockFisherInverse(48, 48, 1e-7, 16, dtype=torch.float64)
    f32.add_grads(g)
    f64.add_grads(g)
    d32, d64 = f32.diag().double(), f64.diag()
    assert bool((d32 > 0).all())
    assert float((d32.log10() - d64.log10()).abs().max()) < 1.0  # within 10× where exact is 1/λ-scale


def test_direct_fisher_refuses_gradients_after_it_was_inverted_and_bad_methods():
    f = fisher_of(torch.randn(8, 20, dtype=F64), 4, 1e-2, 8)
    f.finv
    with pytest.raises(RuntimeError, match="already inverted"):
        f.add_grads(torch.randn(2, 20, dtype=F64))
    with pytest.raises(ValueError, match="method must be one of: direct, woodbury"):
        BlockFisherInverse(20, 4, 1e-2, 8, method="cholesky")


def _problem(seed=0, shape=(4, 12), block=8, m=30, damp=1e-2):
    torch.manual_seed(seed)
    w = torch.randn(shape, dtype=F64)
    grads = torch.randn(m, w.numel(), dtype=F64)
    f = fisher_of(grads, block, damp, 7)
    F = torch.block_diag(*dense_fisher_blocks(grads, block, damp))[: w.numel(), : w.numel()]
    return w, f, F


def test_joint_update_is_the_closed_form_zeroes_the_set_and_costs_its_saliency():
    w, f, F = _problem()
    finv = torch.linalg.inv(F)  # dense inverse of the whole (block-diagonal) Fisher
    pruned = torch.rand(w.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    delta, predicted = obs_update(f, w, pruned, "joint")
    Q = pruned.reshape(-1).nonzero().squeeze(1)
    wf = w.reshape(-1)
    closed = -finv[:, Q] @ torch.linalg.solve(finv[Q][:, Q], wf[Q])  # (E3) δw* = −F⁻¹E_Qᵀ(E_Q F⁻¹ E_Qᵀ)⁻¹E_Q w
    assert torch.allclose(delta.reshape(-1), closed, atol=1e-10)
    new = w + delta
    assert new[pruned].abs().max() < 1e-10  # pruned weights land on zero
    rho = 0.5 * wf[Q] @ torch.linalg.solve(finv[Q][:, Q], wf[Q])  # (E4)
    assert predicted == pytest.approx(float(rho), rel=1e-9)
    assert float(0.5 * delta.reshape(-1) @ F @ delta.reshape(-1)) == pytest.approx(predicted, rel=1e-8)
    # any other way of zeroing the set costs more under the quadratic model
    plain = -(w * pruned).reshape(-1)
    assert float(0.5 * plain @ F @ plain) > predicted


def test_single_weight_saliency_and_independent_update_match_the_paper():
    w, f, F = _problem(seed=2)
    finv = torch.linalg.inv(F)
    rho = saliency(f, w).reshape(-1)[: w.numel()]
    assert torch.allclose(rho, w.reshape(-1) ** 2 / (2 * finv.diagonal()), rtol=1e-9)  # (E5)
    i = 5
    one = torch.zeros(w.shape, dtype=torch.bool).reshape(-1)
    one[i] = True
    delta, predicted = obs_update(f, w, one.reshape(w.shape), "joint")
    assert torch.allclose(delta.reshape(-1), -(w.reshape(-1)[i] / finv[i, i]) * finv[:, i], atol=1e-12)
    assert predicted == pytest.approx(float(rho[i]), rel=1e-9)
    pruned = torch.zeros(w.numel(), dtype=torch.bool)
    pruned[[0, 3, 9, 20]] = True
    delta, predicted = obs_update(f, w, pruned.reshape(w.shape), "independent")
    wf = w.reshape(-1)
    expected = -sum(wf[j] / finv[j, j] * finv[:, j] for j in [0, 3, 9, 20])  # sum of single-weight updates
    assert torch.allclose(delta.reshape(-1), expected, atol=1e-10)
    assert predicted == pytest.approx(float(rho[[0, 3, 9, 20]].sum()), rel=1e-9)
    delta, _ = obs_update(f, w, pruned.reshape(w.shape), "none")
    assert not delta.any()


def test_group_saliency_and_1x4_update():
    w, f, F = _problem(seed=4, shape=(3, 16), block=8)
    finv = torch.linalg.inv(F)
    s = f.from_blocks(saliency(f, w, group=4)).reshape(w.shape)
    wf = w.reshape(-1)
    for g in range(w.numel() // 4):
        idx = torch.arange(4 * g, 4 * g + 4)
        rho = 0.5 * wf[idx] @ torch.linalg.solve(finv[idx][:, idx], wf[idx])
        assert float(s.reshape(-1)[idx].sum()) == pytest.approx(float(rho), rel=1e-9)
        assert torch.allclose(s.reshape(-1)[idx], s.reshape(-1)[idx][0].expand(4))
    pruned = torch.zeros(w.shape, dtype=torch.bool)
    pruned[0, 4:8] = pruned[2, 0:4] = True
    delta, _ = obs_update(f, w, pruned, "independent", group=4)
    expected = torch.zeros(w.numel(), dtype=F64)
    for idx in (torch.arange(4, 8), torch.arange(32, 36)):  # 4-block update of the paper, summed
        expected -= finv[:, idx] @ torch.linalg.solve(finv[idx][:, idx], wf[idx])
    assert torch.allclose(delta.reshape(-1), expected, atol=1e-10)
    joint, _ = obs_update(f, w, pruned, "joint", group=4)
    assert torch.allclose(joint, delta, atol=1e-10)  # the two groups lie in different Fisher blocks


def _linear_with_gradients(shape=(8, 16), m=24, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(shape[1], shape[0], bias=False)
    xs = [torch.randn(4, shape[1]) for _ in range(m)]
    targets = [torch.randn(4, shape[0]) for _ in range(m)]
    grads, it = [], iter(range(m))

    def gradient() -> float:
        i = next(it)
        lin.weight.grad = None
        loss = ((lin(xs[i]) - targets[i]) ** 2).mean()
        loss.backward()
        grads.append(lin.weight.grad.detach().reshape(-1).clone())
        return float(loss.detach())

    return lin, gradient, grads


def test_score_builds_the_exact_inverse_from_real_gradients_and_masks_pruned_ones():
    lin, gradient, grads = _linear_with_gradients()
    score = OBSScore({"l": lin}, parse_structure("unstructured"), num_grads=24, block_size=16, damp=1e-3, dtype=F64)
    score.keep["l"][0, :3] = False  # already pruned: their gradients do not enter the Fisher
    score.before_update(gradient)
    G = torch.stack(grads).to(F64) * score.keep["l"].reshape(-1)
    for b, F in enumerate(dense_fisher_blocks(G, 16, 1e-3)):
        assert torch.allclose(score.fisher["l"].finv[b], torch.linalg.inv(F), rtol=1e-8, atol=1e-6), b
    s = score.scores()["l"]
    assert torch.isinf(s[0, :3]).all() and (s[0, :3] < 0).all() and torch.isfinite(s[1:]).all()


def test_1x4_selection_respects_blocks_and_picks_lowest_group_saliency():
    lin, gradient, _ = _linear_with_gradients(shape=(8, 16), m=32, seed=5)
    st = parse_structure("1x4")
    score = OBSScore({"l": lin}, st, num_grads=32, block_size=16, damp=1e-3)
    score.before_update(gradient)
    scores = score.scores()
    keep = st.masks(scores, 0.5, "layer")["l"]
    groups = keep.reshape(8, 4, 4)
    assert (groups.all(-1) | ~groups.any(-1)).all()  # every 1x4 group kept or dropped whole
    assert int((~keep).sum()) == 64
    group_rho = scores["l"].reshape(8, 4, 4).sum(-1)
    assert group_rho[~groups.all(-1)].max() <= group_rho[groups.all(-1)].min()
    masks = MaskSet({"l": lin})
    score.update_masks(masks, {"l": keep}, None, 0.5)
    assert (lin.weight[~keep] == 0).all() and score.fisher is None and len(score.stats["predicted_loss_increase"]) == 1


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=0, n_train=256, n_eval=32)
    model = task.base_model()
    task.finetune(model, 30)
    return task, model.eval()


@pytest.mark.parametrize("kw", [dict(sparsity=0.7), dict(sparsity=0.5, structure="1x4"),
                                dict(sparsity=0.5, structure="2:4"), dict(sparsity=0.8, scope="global", update="independent")])
def test_oneshot_reaches_exact_sparsity_and_leaves_plain_weights(tiny, kw):
    task, dense = tiny
    model = copy.deepcopy(dense)
    seen = []
    p = OBSPruner(steps=0, num_grads=12, grad_batch_size=4, **kw)
    rep = p.prune(model, task, progress=lambda *a: seen.append(a))
    assert [a[0] for a in seen] == list(range(1, 13)) and seen[-1][1] == 12
    total = sum(lin.weight.numel() for lin in prunable_linears(model).values())
    if kw.get("scope") == "global":
        assert rep.prunable_zeros == round(kw["sparsity"] * total)
    else:
        for name, ls in rep.per_layer.items():
            assert ls.zeros == round(kw["sparsity"] * ls.numel), name
    if kw.get("structure") == "1x4":
        for lin in prunable_linears(model).values():
            g = (lin.weight == 0).reshape(lin.weight.shape[0], -1, 4)
            assert (g.all(-1) | ~g.any(-1)).all()
    assert_plain(model)
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    assert not model.training and int((model.classifier.weight == 0).sum()) == 0
    n = rep.notes
    assert n["schedule"] == "one-shot" and n["training"] is None and n["fisher_passes"] == 1
    assert n["fisher_bytes"] == sum(-(-lin.weight.numel() // 48) * 48 * 48 * 4 for lin in prunable_linears(model).values())
    assert (n["update"], n["num_grads"], n["gradients"]["batch_size"]) == (kw.get("update", "joint"), 12, 4)
    assert len(n["predicted_loss_increase"]) == 1 and n["predicted_loss_increase"][0] >= 0


def test_gradual_obs_with_distillation_end_to_end(tiny):
    task, dense = tiny
    model = copy.deepcopy(dense)
    seen = []
    p = OBSPruner(sparsity=0.8, steps=8, update_every=2, end_frac=0.75, batch_size=8, num_grads=6, grad_batch_size=4,
                  distill=True)
    assert p.distill
    rep = p.prune(model, task, progress=lambda step, total, loss, s: seen.append(s))
    # pruning steps 0 (sparsity 0: skipped), 2, 4, 6 (the end step)
    assert rep.notes["fisher_passes"] == 3 and len(rep.notes["predicted_loss_increase"]) == 3
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.8, abs=1e-4)  # the masks: layers round
    for name, ls in rep.per_layer.items():
        assert ls.zeros == round(0.8 * ls.numel), name
    assert rep.notes["distillation"] == {"temperature": 2.0, "alpha": 0.9, "hidden_weight": 0.0, "attention_weight": 0.0,
                                         "augment": 0.0}
    assert rep.notes["gradients"]["model_mode"] == "train"
    assert_plain(model)
    assert not model.training


def test_gradual_fisher_gradients_reach_only_the_targeted_weights(tiny, monkeypatch):
    """The Fisher's gradients in the gradual loop: ``.grad`` on the targeted weights, none on the
    embeddings, biases or LayerNorms (backward stops early), and every parameter trains after."""
    task, dense = tiny
    model = copy.deepcopy(dense)
    targets = {id(lin.weight) for lin in prunable_linears(model).values()}
    seen = []
    orig = OBSScore.collect

    def spy(self, gradient):
        def recorded():
            loss = gradient()
            seen.append(({id(q) for q in model.parameters() if q.grad is not None},
                         all(q.requires_grad for q in model.parameters())))
            return loss
        orig(self, recorded)

    monkeypatch.setattr(OBSScore, "collect", spy)
    p = OBSPruner(sparsity=0.8, steps=8, update_every=2, end_frac=0.75, batch_size=8, num_grads=3, grad_batch_size=4,
                  distill=True, hidden_distill=1.0)
    p.prune(model, task)
    assert len(seen) == 3 * 3  # pruning steps 2, 4, 6, three gradients each
    for with_grad, trainable in seen:
        assert with_grad == targets and trainable
    assert all(q.requires_grad for q in model.parameters())


def test_masked_weights_stay_zero_through_training(tiny):
    """The last pruning step lands mid-run (end_frac 0.5): the recovery steps after it keep zeros."""
    task, dense = tiny
    model = copy.deepcopy(dense)
    p = OBSPruner(sparsity=0.6, initial_sparsity=0.6, steps=6, update_every=1, end_frac=0.34, batch_size=8, num_grads=4,
                  grad_batch_size=4, distill=False, lr=1e-2)
    snapshots = []
    orig = OBSScore.update_masks

    def spy(self, masks, new, optimizer, sparsity):
        orig(self, masks, new, optimizer, sparsity)
        snapshots.append({n: m.clone() for n, m in new.items()})

    OBSScore.update_masks = spy
    try:
        p.prune(model, task)
    finally:
        OBSScore.update_masks = orig
    assert len(snapshots) == 1  # 0.6 from the first step on: the end step raises nothing
    for n, lin in prunable_linears(model).items():
        assert (lin.weight[~snapshots[0][n]] == 0).all()
        assert (lin.weight[snapshots[0][n]] != 0).all()


def test_rising_cubic_skips_steps_that_prune_nothing():
    sched = RisingCubic(0.0, 0.9, 10, 20, 5)
    assert [t for t in range(30) if sched.is_update(t)] == [15, 20]
    sched = RisingCubic(0.5, 0.9, 0, 10, 5)
    assert [t for t in range(30) if sched.is_update(t)] == [0, 5, 10]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(structure="1x4", block_size=50), "block_size must be a multiple of 4"),
        (dict(structure="4x1"), "not supported by obs"),
        (dict(num_grads=0), "num_grads"),
        (dict(block_size=0), "block_size"),
        (dict(damp=0.0), "damp"),
        (dict(grad_batch_size=0), "grad_batch_size"),
        (dict(update="exact"), "update must be one of: joint, independent, none"),
        (dict(steps=-1), "steps"),
        (dict(sparsity=0.9, structure="2:4"), "1 - N/M"),
    ],
)
def test_validation_names_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        OBSPruner(**kw)


def test_registered_with_its_config():
    from profiler.plugins import PRUNERS

    params = PRUNERS.params("obs")
    assert {"num_grads", "block_size", "damp", "grad_batch_size", "update", "steps", "sparsity", "structure", "distill"} <= set(params)
    assert params["steps"].default == 1000 and params["distill"].default is True and params["block_size"].default == 48
    assert str(PRUNERS.ranges("obs")["steps"]) == "[0, 10000000]"
    p = PRUNERS.build("obs", {"steps": 0, "sparsity": 0.5, "warmup_steps": 5}, "pruners[0]")
    assert p.steps == 0 and p.describe()["schedule"] == "one-shot"
    # a sweep over steps shares its schedule parameters: one-shot ignores a late start, still checks its range
    sweep = parse_config(tiny_config(pruners=[{"name": "obs", "steps": [0, 100], "sparsity": 0.5, "start_frac": 0.6}]))
    assert sorted(spec.params["steps"] for spec in sweep.pruners) == [0, 100]
    with pytest.raises(ConfigError, match=r"pruners\[0\]\.start_frac"):
        parse_config(tiny_config(pruners=[{"name": "obs", "steps": 0, "start_frac": 1.5}]))
    with pytest.raises(ConfigError, match=r"pruners\[1\]: block_size must be a multiple of 4"):
        parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "obs", "structure": "1x4", "block_size": 50}]))
    with pytest.raises(ConfigError, match=r"pruners\[0\]\.damp"):
        parse_config(tiny_config(pruners=[{"name": "obs", "damp": 0.0}]))


@pytest.mark.parametrize("kw", [dict(steps=1, end_frac=1.0), dict(steps=4, end_frac=1.0, update_every=4)])
def test_gradual_obs_whose_only_pruning_step_follows_the_last_training_step(tiny, kw):
    """end_frac = 1 with no pruning step inside the steps: the final step builds its own Fisher."""
    task, dense = tiny
    p = OBSPruner(sparsity=0.5, num_grads=4, block_size=8, batch_size=4, grad_batch_size=4, distill=False,
                  precision="fp32", **kw)
    report = p.prune(copy.deepcopy(dense), task)
    assert report.sparsity_prunable == pytest.approx(0.5, abs=1e-3)
    assert report.notes["fisher_passes"] == 1


def test_n_m_obs_builds_a_fisher_only_where_the_masks_can_change():
    """Under 2:4 a group drops 0, 1 or 2 weights: of the cubic schedule's rising steps only the two
    where that count rises prune anything, so only they collect ``num_grads`` gradients."""
    p = OBSPruner(sparsity=0.5, structure="2:4")
    ups = [s for s in range(p.steps + 1) if p.schedule.is_update(s)]
    drops = [round(p.schedule.sparsity_at(s) * 4) for s in ups]
    assert drops == [1, 2]
    assert p.structure.reached_sparsity(p.schedule.sparsity_at(ups[-1])) == 0.5
    # unstructured: every step that raises the sparsity stays an update
    q = OBSPruner(sparsity=0.5)
    assert sum(q.schedule.is_update(s) for s in range(q.steps + 1)) > 2


def test_obs_models_cached_before_the_indefinite_block_projection_are_stale():
    # the projection can change any structure's saliencies, so every OBS key moves past version 1
    for p in (OBSPruner(sparsity=0.5, structure="2:4"), OBSPruner(sparsity=0.5, structure="2:4", steps=0),
              OBSPruner(sparsity=0.5), OBSPruner(sparsity=0.5, structure="1x4")):
        assert p.cache_version == 2
