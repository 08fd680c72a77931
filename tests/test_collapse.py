"""Collapse detector: a model that predicts one class, or whose metric is no better than always
answering the majority class, is named collapsed (row field + status reason)."""
import pytest
import torch
from torch import nn

from profiler.runner import PredictionCounter, majority_class_metric
from profiler.tasks import TinySynthetic
from profiler.tasks.tiny_synthetic import MARKER_TOKEN


@pytest.fixture(scope="module")
def task():
    return TinySynthetic(finetune_steps=0, n_train=64, n_eval=40)


class _Rule(nn.Module):
    """Logits from a rule on the marker token (the tiny task's label): ``flip`` answers the opposite."""

    def __init__(self, flip: bool) -> None:
        super().__init__()
        self.flip = flip

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        has = (input_ids == MARKER_TOKEN).any(-1) ^ self.flip
        return torch.stack([(~has).float(), has.float()], -1)


def _fields(task, module):
    counter = PredictionCounter(module)
    metrics = task.evaluate_metrics(counter)
    return metrics["accuracy"], counter.collapse_fields(task, metrics["accuracy"])


def test_a_real_model_forced_to_one_class_is_collapsed(task):
    model = task.base_model().eval()
    with torch.no_grad():  # the head answers class 1 whatever the input
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    acc, f = _fields(task, model)
    assert acc == 0.5 and f["collapsed"] is True
    assert f["collapse_reason"] == "collapsed: predicts class 1 for all 40 evaluation examples"


def test_a_metric_at_or_below_the_majority_class_rate_is_collapsed_though_both_classes_are_predicted(task):
    acc, f = _fields(task, _Rule(flip=True))  # always wrong: both classes predicted, accuracy 0
    assert acc == 0.0 and f["collapsed"] is True
    assert f["collapse_reason"] == ("collapsed: accuracy 0.0000 is no better than always answering the majority "
                                    "class 0 (0.5000)")
    acc, f = _fields(task, _Rule(flip=False))
    assert acc == 1.0 and f == {"collapsed": False}


def test_majority_class_metric_and_regression_heads(task):
    assert majority_class_metric(task, 2) == (0, 0.5)  # labels alternate 0, 1: class 0 first among equals
    assert PredictionCounter(nn.Identity()).collapse_fields(task, 0.1) == {"collapsed": None}  # nothing counted
    assert majority_class_metric(task, 1) is None  # labels do not fit a 1-output head


def test_non_finite_logits_give_no_metric(task):
    """A NaN logit would be argmax class 0: a broken model scored as if it answered. The pass
    refuses, naming how many examples were non-finite."""
    model = task.base_model().eval()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"40 of 40 evaluation examples gave non-finite logits"):
        task.evaluate_metrics(model)
