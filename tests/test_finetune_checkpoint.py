"""An interrupted fine-tune goes on from its last checkpoint and ends with the weights of one never interrupted."""
import pytest
import torch

import pruners.training
from profiler.tasks import TinySynthetic


def _task() -> TinySynthetic:
    return TinySynthetic(finetune_steps=12, n_train=128, n_eval=16, finetune_precision="fp32")


def test_an_interrupted_fine_tune_resumes_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(pruners.training, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every step
    whole = _task().load_finetuned(tmp_path / "a")

    def stop_at_5(step, total, loss):
        if step == 5:
            raise KeyboardInterrupt

    task = _task()
    with pytest.raises(KeyboardInterrupt):
        task.load_finetuned(tmp_path / "b", stop_at_5)
    partial = task.model_cache_path(tmp_path / "b").with_name(task.model_cache_path(tmp_path / "b").name + ".partial.pt")
    assert torch.load(partial, weights_only=True)["step"] == 5
    seen = []
    resumed = _task()
    model = resumed.load_finetuned(tmp_path / "b", lambda step, total, loss: seen.append(step))
    assert seen[0] == 6 and seen[-1] == 12  # steps 1-5 were not trained again
    assert resumed.finetune_report["resumed_from_step"] == 5 and resumed.finetune_report["steps"] == 12
    for (name, a), (_, b) in zip(whole.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not partial.exists()  # the finished model is cached; its checkpoint is gone


def test_a_damaged_checkpoint_is_warned_about_and_fine_tuning_starts_over(tmp_path, monkeypatch):
    from pruners.training import CheckpointWarning

    task = _task()
    path = task.model_cache_path(tmp_path)
    partial = path.with_name(path.name + ".partial.pt")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"not a checkpoint")
    seen = []
    with pytest.warns(CheckpointWarning, match="could not be used"):
        task.load_finetuned(tmp_path, lambda step, total, loss: seen.append(step))
    assert seen[0] == 1 and "resumed_from_step" not in task.finetune_report


def test_a_checkpoint_that_cannot_be_written_costs_the_checkpoints_not_the_fine_tune(tmp_path, monkeypatch):
    monkeypatch.setattr(pruners.training, "CHECKPOINT_EVERY_S", 0.0)
    whole = _task().load_finetuned(tmp_path / "a")
    (tmp_path / "a-file").write_text("")
    with pytest.warns(pruners.training.CheckpointWarning, match="fine-tuning .* goes on without checkpoints") as caught:
        model = _task()
        model.finetune(m := model.base_model(), 12, checkpoint=tmp_path / "a-file" / "x.partial.pt")
    assert len([w for w in caught if issubclass(w.category, pruners.training.CheckpointWarning)]) == 1
    for (name, a), (_, b) in zip(whole.state_dict().items(), m.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_cached_pruned_model_loads_by_entry_name_and_a_wrong_name_lists_the_tasks_entries(tmp_path):
    import json

    task = _task()
    entry = tmp_path / "pruned" / "tiny-synthetic-magnitude-0123"
    model = task.base_model()
    model.save_pretrained(entry)
    (entry / "prune_report.json").write_text(json.dumps({"notes": {"schedule": "one-shot", "sparsity": 0.5,
                                                                   "structure": "1x4", "step": 0}}))
    (tmp_path / "pruned" / "sst2-magnitude-4567").mkdir()
    (tmp_path / "pruned" / "sst2-magnitude-4567" / "prune_report.json").write_text("{}")
    loaded, made_by = task.load_cached_pruned("tiny-synthetic-magnitude-0123", tmp_path)
    assert made_by == "schedule one-shot, sparsity 0.5, structure 1x4"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    for wrong in ("sst2-magnitude-4567", "tiny-synthetic-nothing", "../pruned/tiny-synthetic-magnitude-0123", ""):
        with pytest.raises(ValueError, match=r"not a pruned tiny-synthetic model .* entries there: "
                                             r"tiny-synthetic-magnitude-0123$"):
            task.load_cached_pruned(wrong, tmp_path)
