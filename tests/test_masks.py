"""The shared mask mechanism: zeros survive momentum and weight decay; checkpoints are plain."""
import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from profiler.tasks import TinySynthetic
from pruners.base import prunable_linears, sparsity_report
from pruners.gmp import GMPPruner
from pruners.masks import MaskSet, assert_plain
from pruners.scores import MagnitudeScore
from pruners.structure import parse_structure


def _linear_with_momentum(seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(32, 32)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(64, 32), torch.randn(64, 32)
    for _ in range(5):  # build up momentum before the prune
        nn.functional.mse_loss(lin(x), y).backward()
        opt.step()
        opt.zero_grad()
    return lin, opt, x, y


def _prune_80(lin, opt=None):
    ms = MaskSet({"lin": lin})
    ms.update(parse_structure("unstructured").masks(MagnitudeScore({"lin": lin}).scores(), 0.8), opt, sparsity=0.8)
    return ms


def test_sgd_momentum_weight_decay_keeps_exact_zero_count():
    """After an 80 % prune, 20 SGD steps (momentum 0.9, wd 1e-2) keep the zeros (momentum and weight
    decay must not revive pruned weights)."""
    lin, opt, x, y = _linear_with_momentum()
    ms = _prune_80(lin, opt)
    zeros = int((lin.weight == 0).sum())
    assert zeros == round(0.8 * lin.weight.numel())
    pruned = lin.weight == 0
    for _ in range(20):
        nn.functional.mse_loss(lin(x), y).backward()
        ms.step(opt)
        opt.zero_grad()
        assert int((lin.weight == 0).sum()) == zeros
        assert (lin.weight[pruned] == 0).all()
        assert (opt.state[lin.weight]["momentum_buffer"][pruned] == 0).all()


def test_without_the_mechanism_momentum_regrows_pruned_weights():
    """Control: zeroing weights once (no mask on grads/state) lets momentum regrow them."""
    lin, opt, x, y = _linear_with_momentum()
    with torch.no_grad():
        lin.weight.mul_(_prune_80(lin).masks["lin"])  # masks applied once, optimizer state untouched
    zeros = int((lin.weight == 0).sum())
    nn.functional.mse_loss(lin(x), y).backward()
    opt.step()
    assert int((lin.weight == 0).sum()) < zeros


def test_adamw_keeps_zeros_and_state_masked():
    torch.manual_seed(1)
    lin = nn.Linear(16, 16)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(8, 16)
    lin(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
    ms = _prune_80(lin, opt)
    zeros = int((lin.weight == 0).sum())
    for _ in range(5):
        lin(x).pow(2).sum().backward()
        ms.step(opt, clip_norm=1.0, params=list(lin.parameters()))
        opt.zero_grad()
        assert int((lin.weight == 0).sum()) == zeros
    st = opt.state[lin.weight]
    assert (st["exp_avg"][~ms.masks["lin"]] == 0).all() and (st["exp_avg_sq"][~ms.masks["lin"]] == 0).all()


def test_update_rejects_wrong_masks():
    lin = nn.Linear(4, 4)
    ms = MaskSet({"lin": lin})
    with pytest.raises(ValueError, match="bool"):
        ms.update({"lin": torch.ones(4, 4)})
    with pytest.raises(ValueError, match="targeted layers"):
        ms.update({"other": torch.ones(4, 4, dtype=torch.bool)})


def test_assert_plain_catches_torch_prune_machinery():
    m = nn.Sequential(nn.Linear(4, 4))
    assert_plain(m)
    from torch.nn.utils import prune

    prune.l1_unstructured(m[0], "weight", amount=0.5)
    with pytest.raises(RuntimeError, match="weight_orig|weight_mask|prune hook"):
        assert_plain(m)


@pytest.fixture(scope="module")
def pruned_tiny():
    task = TinySynthetic(finetune_steps=0, n_train=256, n_eval=32)
    dense = task.base_model()
    model = copy.deepcopy(dense)
    rep = GMPPruner(sparsity=0.9, steps=8, update_every=2, batch_size=8, distill=True).prune(model, task)
    return task, dense, model, rep


def test_saved_and_strictly_reloaded_model_has_same_zeros_and_outputs(pruned_tiny, tmp_path):
    task, _, model, _ = pruned_tiny
    model.save_pretrained(tmp_path, safe_serialization=True)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert not [k for k in keys if "orig" in k or "mask" in k]
    reloaded = task.load_saved(tmp_path)  # strict: raises on missing/unexpected/mismatched keys
    for (n, a), (n2, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert n == n2
        assert torch.equal(a == 0, b == 0), n
    ex = task.example_inputs(4, 24)
    with torch.no_grad():
        assert torch.equal(model.eval()(**ex).logits, reloaded(**ex).logits)


def test_tiny_bert_report_at_90_names_both_figures_from_masks(pruned_tiny):
    _, dense, model, rep = pruned_tiny
    d = rep.to_dict()
    layers = prunable_linears(model)
    assert rep.prunable_numel == sum(l.weight.numel() for l in layers.values())
    assert rep.prunable_zeros == sum(round(0.9 * l.weight.numel()) for l in layers.values())  # exact per layer
    assert d["sparsity_prunable"] == pytest.approx(0.9, abs=1e-4)
    assert rep.all_numel == sum(p.numel() for p in model.parameters())
    assert 0 < d["sparsity_all_params"] < d["sparsity_prunable"]
    assert d["denominators"] == {"sparsity_prunable": "targeted encoder Linear weights", "sparsity_all_params": "all model parameters"}
    # the mask-based counts agree with the zeros actually in the squashed weights
    w = sparsity_report(model)
    assert (w.prunable_zeros, w.all_zeros) == (rep.prunable_zeros, rep.all_zeros)
    assert set(d["per_layer"]) == set(layers)


def test_mask_set_refuses_wrong_masks_and_clipping_without_params():
    lin = nn.Linear(8, 4)
    ms = MaskSet({"lin": lin})
    keep = torch.ones(4, 8, dtype=torch.bool)
    for install in (ms.update, ms.set):
        with pytest.raises(ValueError, match="cover exactly the targeted layers"):
            install({"other": keep})
        with pytest.raises(ValueError, match="must be bool \\(4, 8\\)"):
            install({"lin": keep.float()})
        with pytest.raises(ValueError, match="must be bool \\(4, 8\\)"):
            install({"lin": keep[:, :4]})
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    lin(torch.randn(2, 8)).sum().backward()
    before = lin.weight.detach().clone()
    with pytest.raises(ValueError, match="clip_norm needs params"):
        ms.step(opt, clip_norm=1.0)
    assert torch.equal(lin.weight, before)  # refused before any step
