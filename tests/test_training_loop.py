"""The shared training machinery: precision selection, the teacher-logit cache, bf16 masks,
the schedule, and the speed figures written into reports."""
import copy

import pytest
import torch

from accelerators import base as accel_base
from accelerators.base import logits_of
from profiler.tasks import TinySynthetic
import pruners.gmp as gmp
from pruners import training
from pruners.base import prunable_linears
from pruners.distill import AttentionTap, Distiller, attention_kl, check_teacher_seeds, hidden_mse, weights_key
from pruners.gmp import GMPPruner
from pruners.obs import OBSPruner
from tests.conftest import load_script


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=0, n_train=128, n_eval=32)
    return task, task.base_model().eval()


def test_precision_auto_follows_cpu_flags(monkeypatch):
    monkeypatch.setattr(accel_base, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert training.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(accel_base, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert training.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(accel_base, "cpu_flags", lambda: {"avx512f", "avx2"})
    assert training.resolve_precision("auto") == "fp32"
    assert training.resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="needs a CPU with avx512_bf16 or amx_bf16"):
        training.check_precision("bf16")
    with pytest.raises(ValueError, match="precision must be one of: auto, fp32, bf16"):
        training.check_precision("fp16")


def test_pruned_cache_key_holds_the_precision_auto_resolves_to(monkeypatch, tmp_path):
    """A model trained in bf16 is not served from a shared cache to a CPU where "auto" trains in fp32."""
    from profiler.config import parse_config
    from profiler.plugins import TASKS
    from profiler.runner import Runner
    from tests.conftest import tiny_config

    cfg = parse_config(tiny_config(pruners=[{"name": "gmp", "sparsity": 0.5, "steps": 2, "batch_size": 8}]))
    spec = cfg.tasks[0]
    task = TASKS.build(spec.name, spec.params, spec.key)
    runner = Runner(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    dense = task.load_finetuned(runner.cache_dir)
    precisions = []
    for flags in ({"avx512f", "avx512_bf16"}, {"avx512f", "avx2"}, {"avx512f", "avx512_bf16"}):
        monkeypatch.setattr(accel_base, "cpu_flags", lambda flags=flags: flags)
        _, report = runner.pruned(task, dense, cfg.pruners[0])
        precisions.append(report.notes["training_speed"]["precision"])
    assert precisions == ["bf16", "fp32", "bf16"]  # the third from the cache: the first one's entry
    assert len(list((tmp_path / "cache" / "pruned").iterdir())) == 2


def test_bf16_accelerator_row_says_whether_bf16_is_native(monkeypatch, tiny):
    from accelerators.base import PrepareSettings
    from accelerators.bf16 import BF16
    _, model = tiny
    for flags, native, amx in [({"avx2"}, False, False), ({"avx512_bf16"}, True, False), ({"amx_bf16"}, True, True)]:
        monkeypatch.setattr(accel_base, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr("accelerators.bf16.cpu_flags", lambda flags=flags: flags)
        fields = BF16().prepare(model, {}, PrepareSettings()).fields
        assert (fields["bf16_native"], fields["bf16_amx"]) == (native, amx)


def test_precision_is_validated_by_pruner_and_task_constructors(monkeypatch):
    monkeypatch.setattr(accel_base, "cpu_flags", lambda: set())
    with pytest.raises(ValueError, match="precision = 'bf16' needs a CPU"):
        GMPPruner(precision="bf16")
    with pytest.raises(ValueError, match="finetune_precision must be one of"):
        TinySynthetic(finetune_precision="half")


def test_warmup_linear_decay_golden():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = training.warmup_linear_decay(opt, 2, 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_cyclic_linear_factor_golden():
    # cycles [0, 4), [4, 8), [8, 10): from 1 down to the floor 0.1 just before the next restart
    f = training.cyclic_linear_factor([8, 4, 12], 10)
    assert [f(s) for s in range(10)] == pytest.approx([1.0, 0.775, 0.55, 0.325, 1.0, 0.775, 0.55, 0.325, 1.0, 0.55])
    g = training.cyclic_linear_factor([4], 8, warmup_steps=2, floor=0.0)
    assert [g(s) for s in range(8)] == pytest.approx([0.5, 0.75, 0.5, 0.25, 1.0, 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="floor"):
        training.cyclic_linear_factor([], 10, floor=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        training.cyclic_linear_factor([], 0)


def test_cyclic_lr_schedule_rewinds_at_every_mask_update():
    p = GMPPruner(sparsity=0.5, steps=20, start_frac=0.1, end_frac=0.6, update_every=5, lr=1e-3, lr_schedule="cyclic")
    f = p.lr_factor()
    updates = [s for s in range(20) if p.schedule.is_update(s)]
    assert updates == [2, 7, 12]
    assert [f(s) for s in updates] == [1.0, 1.0, 1.0] and f(0) == 1.0
    assert f(11) == pytest.approx(0.1 + 0.9 / 5) and f(19) == pytest.approx(1.0 - 0.9 * 7 / 8)
    assert p.describe()["training"]["lr_schedule"] == "cyclic"
    assert GMPPruner(steps=20).lr_factor()(10) == pytest.approx(0.5)  # default: linear decay to 0
    with pytest.raises(ValueError, match="lr_schedule must be one of: linear, cyclic"):
        GMPPruner(lr_schedule="cosine")


def test_cyclic_lr_schedule_drives_the_optimizer(tiny, monkeypatch):
    seen: list[float] = []

    class Spy(torch.optim.lr_scheduler.LambdaLR):
        def step(self, *args, **kwargs):  # called after each optimizer step: the rate that step used
            seen.append(self.optimizer.param_groups[0]["lr"])
            super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", Spy)
    task, model = tiny
    p = GMPPruner(sparsity=0.5, steps=12, end_frac=0.7, update_every=4, lr=1e-3, lr_schedule="cyclic", precision="fp32")
    p.prune(copy.deepcopy(model), task)
    seen = seen[1:]  # the scheduler's constructor steps once, before training
    assert seen == pytest.approx([1e-3 * p.lr_factor()(s) for s in range(12)])
    assert seen[0] == seen[4] == seen[8] == pytest.approx(1e-3) and seen[3] == pytest.approx(1e-3 * (1 - 0.9 * 3 / 4))


def test_index_batches_refuse_an_empty_epoch():
    with pytest.raises(ValueError, match="at least one example"):
        next(training.index_batches(0, [], 4, seed=0))


def test_index_batches_cover_every_example_once_per_epoch_and_are_deterministic():
    lengths = [(i * 7) % 13 for i in range(100)]
    a, b = training.index_batches(100, lengths, 8, 3), training.index_batches(100, lengths, 8, 3)
    first = [next(a) for _ in range(13)]  # 100 / 8 -> 13 batches per epoch
    assert first == [next(b) for _ in range(13)]
    assert sorted(i for batch in first for i in batch) == list(range(100))


def _loss_live_and_cached(task, dense, student, tmp_path):
    data = task.train_examples()
    live = Distiller(dense, 2.0, 0.9)
    cached = Distiller(dense, 2.0, 0.9, examples=[e.input_ids for e in data], cache_dir=tmp_path)
    idx = list(range(0, 40, 3))
    inputs, labels = task.collate([data[i] for i in idx])
    s = logits_of(student(**inputs)).float()
    task_loss = task.loss(s, labels)
    return live.loss(inputs, s, task_loss), cached, (inputs, s, task_loss, idx)


def perturbed(dense, scale):
    """A copy of ``dense`` (eval mode) with N(0, scale²) noise added to every parameter."""
    student = copy.deepcopy(dense)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(scale * torch.randn_like(p))
    return student.eval()


def test_teacher_logit_cache_gives_the_live_teachers_loss(tiny, tmp_path):
    task, dense = tiny
    student = perturbed(dense, 0.01)
    want, cached, (inputs, s, task_loss, idx) = _loss_live_and_cached(task, dense, student, tmp_path)
    first = cached.loss(inputs, s, task_loss, idx)
    again = cached.loss(inputs, s, task_loss, idx)  # served from the cache
    assert cached.cache.computed == len(idx)
    torch.testing.assert_close(first, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, want, rtol=1e-5, atol=1e-6)
    # persisted, and reused by a new distiller of the same teacher and data
    cached.save()
    data = task.train_examples()
    reborn = Distiller(dense, 2.0, 0.9, examples=[e.input_ids for e in data], cache_dir=tmp_path)
    assert reborn.cache.loaded == len(idx)
    torch.testing.assert_close(reborn.loss(inputs, s, task_loss, idx), want, rtol=1e-5, atol=1e-6)
    assert reborn.cache.computed == 0


def test_teacher_cache_key_changes_with_weights_and_data(tiny):
    task, dense = tiny
    ids = [e.input_ids for e in task.train_examples()]
    other = copy.deepcopy(dense)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0
    assert weights_key(dense, ids) == weights_key(copy.deepcopy(dense), ids)
    assert weights_key(dense, ids) != weights_key(other, ids)
    assert weights_key(dense, ids) != weights_key(dense, ids[:-1])


def test_teacher_cache_key_takes_zero_dim_buffers():
    model = torch.nn.BatchNorm1d(3)  # num_batches_tracked: a 0-dim int64 buffer
    other = copy.deepcopy(model)
    other.num_batches_tracked += 1
    assert weights_key(model, [[1, 2]]) != weights_key(other, [[1, 2]])


def test_distillation_of_a_regression_head_is_the_mse_to_the_teachers_prediction():
    """One output (STS-B): the KL of one-way softmaxes would be 0; the soft term is the MSE instead."""
    from pruners.distill import distill_loss

    s, t, task_loss = torch.tensor([[0.5], [2.0]]), torch.tensor([[1.5], [2.0]]), torch.tensor(3.0)
    torch.testing.assert_close(distill_loss(s, t, task_loss, 2.0, 0.9), torch.tensor(0.9 * 0.5 + 0.1 * 3.0))
    torch.testing.assert_close(distill_loss(s, t, task_loss, 2.0, 1.0), torch.tensor(0.5))
    # more than one label: the tempered KL, unchanged
    s2, t2 = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    kl = torch.nn.functional.kl_div(torch.log_softmax(s2 / 2, -1), torch.log_softmax(t2 / 2, -1),
                                    reduction="batchmean", log_target=True)
    torch.testing.assert_close(distill_loss(s2, t2, task_loss, 2.0, 0.9), 0.9 * 4 * kl + 0.1 * 3.0)


@pytest.mark.skipif(not training.bf16_native(), reason="CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated)")
def test_bf16_loop_keeps_masked_weights_exactly_zero_and_reports_speed(tiny, tmp_path):
    task, dense = tiny
    model = copy.deepcopy(dense)
    pruner = GMPPruner(sparsity=0.75, steps=12, update_every=2, end_frac=0.5, distill=True, precision="bf16",
                       structure="1x4")
    pruner.cache_dir = tmp_path
    layers = prunable_linears(model)
    before = {n: torch.zeros_like(lin.weight, dtype=torch.bool) for n, lin in layers.items()}
    checked = []

    def progress_exact(step, total, loss, sparsity):
        for n, lin in layers.items():
            zeros = lin.weight.detach() == 0
            if sparsity == 0.75:  # at the final sparsity the mask no longer changes: zeros stay zeros
                assert bool(zeros[before[n]].all()), f"{n}: a masked weight became non-zero at step {step}"
                checked.append(step)
            before[n] = zeros

    report = pruner.prune(model, task, progress=progress_exact)
    assert checked  # the final-sparsity steps were seen
    assert all(lin.weight.dtype == torch.float32 for lin in layers.values())  # fp32 master weights
    assert report.sparsity_prunable == pytest.approx(0.75)
    speed = report.notes["training_speed"]
    assert speed["precision"] == "bf16" and speed["steps"] == 12 and speed["steps_per_s"] > 0
    assert speed["teacher_forward_examples"] > 0
    assert list((tmp_path / "teacher_logits").glob("*.pt"))


def test_fp32_finetune_reports_its_speed_and_precision():
    task = TinySynthetic(finetune_steps=5, n_train=64, n_eval=16, finetune_precision="fp32")
    model = task.base_model()
    out = task.finetune(model, 5)
    assert out["precision"] == "fp32" and out["steps"] == 5 and out["steps_per_s"] > 0
    assert "precision" not in task.fingerprint()  # fp32 fine-tunes keep their old cache keys


def test_fingerprint_does_not_change_when_the_dense_model_is_loaded(tmp_path):
    task = TinySynthetic(finetune_steps=2, n_train=32, n_eval=8, finetune_precision="fp32")
    before = task.fingerprint()
    task.load_finetuned(tmp_path)
    assert task.finetune_report["steps"] == 2
    assert task.fingerprint() == before


def test_hidden_mse_counts_real_tokens_only_and_averages_layers():
    a = [torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)]
    b = [torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)]
    b[0][0, 0] = 2.0          # a real token: squared error 4 in each of 4 channels
    b[1][1, 2] = 100.0        # padding: must not count
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # layer 0: 16 / (3 real tokens · 4 channels); layer 1: 0; mean over the 2 layers
    assert float(hidden_mse(a, b, mask)) == pytest.approx(16 / 12 / 2)
    with pytest.raises(ValueError, match="layers"):
        hidden_mse(a, b[:1], mask)
    with pytest.raises(ValueError, match="student"):
        hidden_mse([torch.zeros(2, 3, 5)], [torch.zeros(2, 3, 4)], mask)


def test_hidden_distillation_adds_beta_times_the_layer_mse(tiny):
    task, dense = tiny
    student = perturbed(dense, 0.02)
    inputs, labels = task.collate(task.train_examples()[:6])
    out = student(**inputs, output_hidden_states=True)
    s = logits_of(out)
    task_loss = task.loss(s, labels)
    plain = Distiller(dense, 2.0, 0.9).loss(inputs, s, task_loss)
    with_hidden = Distiller(dense, 2.0, 0.9, hidden_weight=3.0)
    with pytest.raises(ValueError, match="hidden states"):
        with_hidden.loss(inputs, s, task_loss)
    got = with_hidden.loss(inputs, s, task_loss, student_hidden=out.hidden_states[1:])
    want_hidden = dense(**inputs, output_hidden_states=True).hidden_states[1:]
    m = inputs["attention_mask"].float().unsqueeze(-1)
    mse = sum(((h - t) ** 2 * m).sum() / (m.sum() * h.shape[-1]) for h, t in zip(out.hidden_states[1:], want_hidden))
    mse = mse / len(want_hidden)
    assert float(mse.detach()) > 0
    torch.testing.assert_close(got, plain + 3.0 * mse, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="hidden_distill"):
        Distiller(dense, hidden_weight=-1.0)


def _reference_attention_kl(student, teacher, mask, heads):
    """attention_kl written out per layer, head, query and key (float64 loops over the real tokens)."""
    total = 0.0
    for s_qkv, t_qkv in zip(student, teacher):
        b, n, width = t_qkv[0].shape
        d = width // heads
        for x, y in ((0, 1), (2, 2)):
            for i in range(b):
                real = [j for j in range(n) if mask[i, j]]
                for h in range(heads):
                    cols = slice(h * d, (h + 1) * d)
                    kl = 0.0
                    for q in real:
                        def dist(qkv):
                            scores = torch.stack([qkv[x][i, q, cols].double() @ qkv[y][i, k, cols].double() for k in real])
                            return torch.softmax(scores / d ** 0.5, 0)
                        pt, ps = dist(t_qkv), dist(s_qkv)
                        kl += float((pt * (pt.log() - ps.log())).sum())
                    total += kl / (mask.sum().item() * heads)
    return total / len(student)


def test_attention_kl_matches_the_definition_and_ignores_padding():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    teacher = [[torch.randn(2, 4, 6) for _ in range(3)] for _ in range(2)]
    student = [[t + 0.3 * torch.randn_like(t) for t in qkv] for qkv in teacher]
    got = attention_kl(student, teacher, mask, heads=2)
    assert float(got) > 0
    assert float(got) == pytest.approx(_reference_attention_kl(student, teacher, mask, 2), rel=1e-5)
    assert float(attention_kl(teacher, teacher, mask, heads=2)) == pytest.approx(0.0, abs=1e-6)
    noisy_padding = [[t.clone() for t in qkv] for qkv in student]
    for qkv in noisy_padding:
        for t in qkv:
            t[0, 3] = 1e3  # the padding token of sequence 0, as query, key and value
    assert float(attention_kl(noisy_padding, teacher, mask, heads=2)) == pytest.approx(float(got), rel=1e-5)
    with pytest.raises(ValueError, match="layers"):
        attention_kl(student[:1], teacher, mask, heads=2)
    with pytest.raises(ValueError, match="heads"):
        attention_kl(student, teacher, mask, heads=4)


def test_attention_distillation_adds_gamma_times_the_kl_of_the_models_projections(tiny):
    task, dense = tiny
    student = perturbed(dense, 0.02)
    inputs, labels = task.collate(task.train_examples()[:6])
    with AttentionTap(student) as tap:
        out = student(**inputs)
    s = logits_of(out)
    task_loss = task.loss(s, labels)
    assert len(tap.outputs) == dense.config.num_hidden_layers and all(x is not None for qkv in tap.outputs for x in qkv)
    plain = Distiller(dense, 2.0, 0.9).loss(inputs, s, task_loss)
    with_attention = Distiller(dense, 2.0, 0.9, attention_weight=2.0, precision="fp32")
    with pytest.raises(ValueError, match="attention projections"):
        with_attention.loss(inputs, s, task_loss)
    got = with_attention.loss(inputs, s, task_loss, student_attention=tap.outputs)
    with AttentionTap(dense) as teacher_tap, torch.no_grad():
        dense(**inputs)
    kl = attention_kl(tap.outputs, teacher_tap.outputs, inputs["attention_mask"], dense.config.num_attention_heads)
    assert float(kl.detach()) > 0
    torch.testing.assert_close(got, plain + 2.0 * kl, rtol=1e-5, atol=1e-6)
    got.backward()  # the hooks kept the student's graph: gradients reach the query projections
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in student.named_parameters() if "query" in n)
    with pytest.raises(ValueError, match="attention_distill"):
        Distiller(dense, attention_weight=-1.0)
    with pytest.raises(ValueError, match="query / key / value"):
        AttentionTap(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("param, weight_key, speed_key", [
    ("hidden_distill", "hidden_weight", "teacher_hidden_states"),
    ("attention_distill", "attention_weight", "teacher_attention"),
])
def test_intermediate_distillation_trains_and_is_recorded(tiny, tmp_path, param, weight_key, speed_key):
    task, dense = tiny
    with pytest.raises(ValueError, match="needs distill"):
        GMPPruner(sparsity=0.5, steps=4, **{param: 1.0})
    model = copy.deepcopy(dense)
    pruner = GMPPruner(sparsity=0.5, steps=6, update_every=2, end_frac=0.5, distill=True, precision="fp32", **{param: 1.0})
    pruner.cache_dir = tmp_path
    report = pruner.prune(model, task)
    assert report.sparsity_prunable == pytest.approx(0.5)
    assert report.notes["distillation"][weight_key] == 1.0
    assert report.notes["training_speed"][speed_key] == "live teacher every step"
    assert report.notes["final_loss_mean_last_50"] > 0
    assert not [h for m in model.modules() for h in m._forward_hooks.values() if "AttentionTap" in h.__qualname__]


def test_bench_training_substitutes_take_every_argument_the_pruner_passes(tiny):
    """scripts/bench_training.py switches the fused optimizer and the teacher cache off by
    substituting plain building blocks; they must accept what the pruner passes today (the
    hidden-state weight and precision included) and be restored afterwards."""
    bench = load_script("bench_training")
    _, model = tiny
    originals = gmp.adamw, gmp.Distiller
    with bench.parts(fused=False, cache=False):
        d = gmp.Distiller(model, 2.0, 0.9, examples=[[1, 2, 3]], cache_dir=None, hidden_weight=1.0, precision="fp32",
                          members=[])
        opt = gmp.adamw(model.parameters(), 1e-4, 0.01)
    assert d.cache is None and d.hidden_weight == 1.0  # no teacher cache, the hidden weight kept
    assert not opt.defaults.get("fused")
    assert (gmp.adamw, gmp.Distiller) == originals


def test_ensemble_teacher_averages_its_members_logits_cached_or_live(tiny, tmp_path):
    """An ensemble teacher's targets are the mean of its teachers' logits, the same from the
    per-member caches (one file per member) as live, and on live rows (augmented copies); the
    hidden-state targets are the first teacher's."""
    task, dense = tiny
    other = perturbed(dense, 0.05)
    data = task.train_examples()
    idx = list(range(0, 40, 3))
    inputs, _ = task.collate([data[i] for i in idx])
    with torch.no_grad():
        want = (logits_of(dense(**inputs)) + logits_of(other(**inputs))).float() / 2
    ensemble = Distiller(dense, 2.0, 0.9, examples=[e.input_ids for e in data], cache_dir=tmp_path, members=[other],
                         hidden_weight=1.0)
    torch.testing.assert_close(ensemble.teacher_logits(inputs), want, rtol=1e-5, atol=1e-6)  # live
    torch.testing.assert_close(ensemble.teacher_logits(inputs, idx), want, rtol=1e-5, atol=1e-6)  # computed, cached
    torch.testing.assert_close(ensemble.teacher_logits(inputs, idx), want, rtol=1e-5, atol=1e-6)  # from the caches
    live = torch.tensor([i % 2 == 0 for i in range(len(idx))])
    torch.testing.assert_close(ensemble.teacher_logits(inputs, idx, live), want, rtol=1e-5, atol=1e-6)
    assert [c.computed for c in ensemble.caches] == [len(idx), len(idx)]
    ensemble.save()
    assert len(list((tmp_path / "teacher_logits").glob("*.pt"))) == 2  # each member under its own key
    with torch.no_grad():
        first = dense(**inputs, output_hidden_states=True).hidden_states[1:]
    for got, ref in zip(ensemble.teacher_hidden(inputs), first):
        torch.testing.assert_close(got, ref)
    d = ensemble.describe()
    assert d["teacher_ensemble_size"] == 2 and d["teacher_forward_examples"] == 2 * len(idx)
    assert "first teacher" in d["teacher_hidden_states"]
    single = Distiller(dense, 2.0, 0.9).teacher_logits(inputs)
    assert not torch.allclose(single, want)  # the member moves the targets


def test_teacher_seeds_are_checked_before_any_work():
    assert check_teacher_seeds([1, 2]) == (1, 2) and check_teacher_seeds(()) == ()
    for bad, match in ((3, "list of seeds"), ("12", "list of seeds"), ([1, 1], "given twice"), ([-1], r"\[0, 4294967295\]"),
                       ([True], "integer"), ([1.5], "integer")):
        with pytest.raises(ValueError, match=match):
            check_teacher_seeds(bad)
    with pytest.raises(ValueError, match="teacher_seeds.*needs distill"):
        GMPPruner(sparsity=0.5, steps=2, teacher_seeds=[1])
    with pytest.raises(ValueError, match="teacher_seeds.*one-shot"):
        OBSPruner(sparsity=0.5, steps=0, distill=True, teacher_seeds=[1])


def test_task_fine_tunes_an_ensemble_member_from_another_seed_on_its_own_data(tmp_path):
    task = TinySynthetic(finetune_steps=3, n_train=64, n_eval=16, seed=0)
    own = task.load_finetuned(tmp_path)
    member = task.load_finetuned_seed(5, tmp_path)
    assert task.seed == 0 and task.train_examples() == TinySynthetic(finetune_steps=3, n_train=64, n_eval=16).train_examples()
    assert len(list((tmp_path / "finetuned").iterdir())) == 2  # cached under its own fingerprint
    w_own, w_member = own.state_dict(), member.state_dict()
    assert any(not torch.equal(w_own[k], w_member[k]) for k in w_own)
    again = task.load_finetuned_seed(5, tmp_path)  # from the cache
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in w_member.items())


def test_pruner_with_teacher_seeds_distils_from_the_ensemble(tiny, tmp_path):
    task, dense = tiny
    with pytest.raises(ValueError, match="task's own seed"):
        pruner = GMPPruner(sparsity=0.5, steps=2, distill=True, teacher_seeds=[task.seed])
        pruner.prune(copy.deepcopy(dense), task)
    pruner = GMPPruner(sparsity=0.5, steps=6, update_every=2, end_frac=0.5, distill=True, teacher_seeds=[7],
                       precision="fp32", batch_size=8)
    pruner.cache_dir = tmp_path
    calls = []
    report = pruner.prune(copy.deepcopy(dense), task, progress=lambda *a: calls.append(a))
    assert report.sparsity_prunable == pytest.approx(0.5)
    assert report.notes["distillation"]["teacher_seeds"] == [7]
    assert report.notes["training_speed"]["teacher_ensemble_size"] == 2
    assert [p.name for p in (tmp_path / "finetuned").iterdir()]  # the member, fine-tuned and cached
    assert len(calls) == 6  # the member's fine-tune (finetune_steps = 0 here) reports nothing, training 6 steps


def test_ensemble_run_is_the_same_whether_its_members_were_cached_or_not(tmp_path):
    """Fine-tuning a member inside prune() must not move the student's random stream."""
    task = TinySynthetic(finetune_steps=4, n_train=64, n_eval=16)
    dense = task.base_model().eval()

    def pruned():
        p = GMPPruner(sparsity=0.5, steps=4, update_every=2, end_frac=0.5, distill=True, teacher_seeds=[3],
                      precision="fp32", batch_size=8)
        p.cache_dir = tmp_path
        model = copy.deepcopy(dense).train()
        p.prune(model, task)
        return model.state_dict()

    first, second = pruned(), pruned()  # the member fine-tuned, then loaded from the cache
    assert all(torch.equal(v, second[k]) for k, v in first.items())


def test_attention_tap_finds_distilberts_projections(tmp_path):
    """DistilBERT names its projections q_lin / k_lin / v_lin: tapped like BERT's query / key / value."""
    from transformers import AutoModelForSequenceClassification

    from tests.tiny_family import save_tiny_model

    model = AutoModelForSequenceClassification.from_pretrained(save_tiny_model(tmp_path / "d", "distilbert"))
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    with AttentionTap(model) as tap:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert len(tap.outputs) == model.config.num_hidden_layers
    assert all(x is not None and x.shape == (2, 7, model.config.dim) for qkv in tap.outputs for x in qkv)
