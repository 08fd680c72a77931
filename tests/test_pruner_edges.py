"""Edge inputs of the mask selection and the GMP schedule: NaN scores refused on every selection
path, a sparsity just below 1 that keeps one group per layer, a start step past the run."""
from __future__ import annotations

import pytest
import torch

from pruners.movement_masks import Sampler, threshold_masks
from pruners.structure import parse_structure


def _scores():
    s = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    s[2, 5] = float("nan")
    return {"layer": s}


@pytest.mark.parametrize("spec", ["unstructured", "1x4", "2:4"])
def test_nan_scores_are_refused_by_every_structure(spec):
    structure = parse_structure(spec)
    sparsity = 0.5
    with pytest.raises(ValueError, match="scores contain NaN"):
        structure.masks(_scores(), sparsity)


def test_nan_scores_are_refused_by_thresholds_and_sampled_cuts():
    with pytest.raises(ValueError, match="scores contain NaN"):
        threshold_masks(_scores(), 0.5)
    flat = torch.rand(100_000, generator=torch.Generator().manual_seed(1))
    flat[7] = float("nan")
    with pytest.raises(ValueError, match="scores contain NaN"):
        Sampler(0).cut(flat, 50_000, 1_000)


@pytest.mark.parametrize("spec", ["unstructured", "4x4"])
def test_a_sparsity_just_below_one_keeps_a_group_of_each_layer(spec):
    scores = {"a": torch.rand(8, 8), "b": torch.rand(16, 8)}
    keep = parse_structure(spec).masks(scores, 0.999)
    group = 1 if spec == "unstructured" else 16
    assert {n: int(m.sum()) for n, m in keep.items()} == {"a": group, "b": group}


def test_a_start_step_past_the_run_is_refused():
    from pruners.gmp import GMPPruner

    GMPPruner(sparsity=0.5, steps=10, start_frac=0.94, end_frac=1.0)  # starts at step 9, inside the run
    with pytest.raises(ValueError, match=r"start_frac = 0.96 starts pruning at step 10 of a 10-step run: use a "
                                         r"start_frac below 0.95"):
        GMPPruner(sparsity=0.5, steps=10, start_frac=0.96, end_frac=1.0)


def test_progress_shows_the_sparsity_the_masks_reach():
    """N:M below its final level drops whole steps of its groups: the masks, not the schedule's value,
    say what the model holds."""
    from pruners.masks import MaskSet

    lin = torch.nn.Linear(8, 4)
    masks = MaskSet({"l": lin})
    keep = parse_structure("2:4").masks({"l": torch.rand(4, 8)}, 0.44)  # each group drops 2 of 4 already
    masks.update(keep, sparsity=0.44)
    assert masks.sparsity == 0.44 and masks.achieved == 0.5


def test_one_table_may_sweep_distill_with_its_own_temperature_and_alpha(tmp_path):
    """temperature / alpha are unused without distillation but accepted, so ``distill = [false, true]``
    beside a temperature of its own stays one table (and runs written with it resume)."""
    from profiler.config import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('[[tasks]]\nname = "tiny-synthetic"\n[[pruners]]\nname = "gmp"\nsparsity = 0.5\nsteps = 4\n'
                   'distill = [false, true]\ntemperature = 4.0\nalpha = 0.5\n'
                   '[[accelerators]]\nname = "torch-fp32"\n')
    specs = [p for p in load_config(cfg).pruners if p.name == "gmp"]
    assert sorted(p.params["distill"] for p in specs) == [False, True]
    assert {(p.params["temperature"], p.params["alpha"]) for p in specs} == {(4.0, 0.5)}
