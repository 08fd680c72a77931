"""A task plugin that breaks the Task contract is refused with a reason naming the hook: no
fingerprint (the dense model's cache key) before any work, an empty evaluation split when the
metric would be taken."""
from __future__ import annotations

import pytest

from profiler.config import check_matrix_fits_tasks, parse_config
from profiler.errors import ConfigError
from profiler.registry import TASKS
from profiler.tasks.tiny_synthetic import TinySynthetic
from tests.conftest import tiny_config


class NoFingerprint(TinySynthetic):
    """A task plugin that forgot fingerprint()."""

    name = "no-fingerprint"

    def fingerprint(self):
        raise NotImplementedError


class NoEval(TinySynthetic):
    name = "no-eval"

    def eval_examples(self):
        return []


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(TASKS, "_classes", dict(TASKS._classes))
    monkeypatch.setattr(TASKS, "_sources", dict(TASKS._sources))
    for cls in (NoFingerprint, NoEval):
        TASKS.register(cls, source="distribution 'x'")


def test_a_task_without_a_fingerprint_is_refused_before_any_work(registered):
    cfg = parse_config(tiny_config(tasks=[{"name": "no-fingerprint"}]))
    with pytest.raises(ConfigError, match=r"fingerprint\(\) is not implemented"):
        check_matrix_fits_tasks(cfg)


def test_an_empty_evaluation_split_is_named_not_a_division_by_zero(registered):
    task = NoEval(finetune_steps=0, n_train=16, n_eval=8)
    with pytest.raises(ValueError, match="no evaluation examples"):
        task.evaluate(task.base_model())


@pytest.mark.parametrize("name", ["sst2", "mrpc", "stsb", "tiny-synthetic"])
def test_every_built_in_task_gives_its_model_cache_key(name, tmp_path):
    """The dense model's cache key of each packaged task (the quickstart's sst2 first): sst2 keeps
    its fingerprint as its key, so caches written before model_fingerprint() existed stay valid."""
    import profiler.plugins  # noqa: F401  (registers the built-in tasks)
    from profiler.identity import stable_hash

    task = TASKS.build(name, {}, "tasks[0]")
    key = task.model_fingerprint()
    assert task.model_cache_path(tmp_path).name == f"{task.name}-{stable_hash(key)}"
    if name in ("sst2", "tiny-synthetic"):
        assert key == task.fingerprint()
    else:  # a GLUE preset through text-classification: the eval split is not part of the model's key
        assert "eval" not in key["data"] and "eval" in task.fingerprint()["data"]
