import copy

import pytest
import torch

from accelerators.base import PrepareSettings
from accelerators.int8_dynamic import Int8Dynamic
from accelerators.torch_fp32 import TorchFP32
from profiler.tasks import TinySynthetic
from pruners.base import ALL_ROLES, _keep_mask, prunable_linears, sparsity_report
from pruners.magnitude import MagnitudePruner


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=0)
    return task, task.base_model().eval()


def test_roles_pick_only_encoder_linears(tiny):
    _, model = tiny
    names = prunable_linears(model)
    assert len(names) == 6 * 2  # 6 roles × 2 layers
    assert not any("pooler" in n or "classifier" in n or "embeddings" in n for n in names)
    ffn = prunable_linears(model, ["ffn_out"])
    assert all(n.endswith(".output.dense") and ".attention." not in n for n in ffn)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95])
def test_magnitude_exact_sparsity(tiny, scope, sparsity):
    task, model = tiny
    m = copy.deepcopy(model)
    before = {n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()}
    rep = MagnitudePruner(sparsity=sparsity, scope=scope).prune(m, task)
    _assert_smallest_groups_were_pruned(before, prunable_linears(m), (1, 1), scope)
    expected = sum(round(sparsity * w.weight.numel()) for w in prunable_linears(m).values()) if scope == "layer" else round(sparsity * rep.prunable_numel)
    assert rep.prunable_zeros == expected
    if scope == "layer":
        for name, ls in rep.per_layer.items():
            assert ls.zeros == round(sparsity * ls.numel), name
    # untouched parts keep every weight
    assert torch.equal(m.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    assert torch.equal(m.classifier.weight, model.classifier.weight)


def _assert_smallest_groups_were_pruned(before: dict[str, torch.Tensor], after: dict, block: tuple[int, int],
                                       scope: str) -> None:
    """Every pruned group (a ``block`` = rows x cols of weights, all zero after pruning) had an L1
    norm of its weights before pruning no larger than every kept group's, within the pruner's
    ranking scope: each layer alone (``"layer"``) or all layers together (``"global"``)."""
    r, c = block
    pruned, kept = {}, {}
    for n, w0 in before.items():
        l1 = w0.abs().reshape(w0.shape[0] // r, r, w0.shape[1] // c, c).sum(dim=(1, 3))
        w = after[n].weight.detach()
        gone = (w.reshape(w.shape[0] // r, r, w.shape[1] // c, c) == 0).all(dim=3).all(dim=1)
        pruned[n], kept[n] = l1[gone], l1[~gone]
    if scope == "global":
        pruned = {"all layers": torch.cat(list(pruned.values()))}
        kept = {"all layers": torch.cat(list(kept.values()))}
    for n, p in pruned.items():
        if p.numel() and kept[n].numel():
            assert p.max() <= kept[n].min(), f"{n}: a pruned group's L1 {p.max():.4g} > a kept one's {kept[n].min():.4g}"


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_1x4_blocks_drop_the_lowest_l1_blocks(tiny, scope):
    task, model = tiny
    m = copy.deepcopy(model)
    before = {n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()}
    rep = MagnitudePruner(sparsity=0.5, scope=scope, structure="1x4").prune(m, task)
    assert rep.prunable_zeros > 0
    _assert_smallest_groups_were_pruned(before, prunable_linears(m), (1, 4), scope)


def test_magnitude_ties_are_broken_exactly():
    # the selection every pruner ranks with: exact counts, ties dropped earliest-first
    keep = _keep_mask(torch.ones(100), 37)
    assert int((~keep).sum()) == 37 and not keep[:37].any() and keep[37:].all()
    assert _keep_mask(torch.tensor([3.0, 1.0, 1.0, 1.0, 2.0]), 2).tolist() == [True, False, False, True, True]


def test_sparsity_report_names_both_denominators(tiny):
    task, model = tiny
    m = copy.deepcopy(model)
    rep = MagnitudePruner(sparsity=0.9).prune(m, task)
    d = rep.to_dict()
    assert d["sparsity_prunable"] == pytest.approx(0.9, abs=1e-3)
    assert 0 < d["sparsity_all_params"] < d["sparsity_prunable"]
    assert set(d["denominators"]) == {"sparsity_prunable", "sparsity_all_params"}
    assert rep.all_numel == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("acc", [TorchFP32(), Int8Dynamic()])
def test_prepare_does_not_mutate_its_input(tiny, acc):
    task, model = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(mod) for mod in model.modules()]
    ex = task.example_inputs(2, 16)
    out = acc.prepare(model, ex, PrepareSettings(threads=1)).module
    assert out is not model
    out(**ex)
    assert [type(mod) for mod in model.modules()] == types
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_int8_dynamic_reports_unavailable_engine():
    with pytest.raises(ValueError, match="engine must be one of"):
        Int8Dynamic(engine="nope")
    acc = Int8Dynamic()
    ok, why = acc.availability()
    assert ok, why
