"""The packaged GLUE tasks on all-MiniLM-L6-v2 as named presets of ``text-classification``, so each
one's rows carry their own task name (reports compare cells within one task name)."""
from __future__ import annotations

from typing import ClassVar

from profiler.tasks.base import FinetuneBatch, FinetuneLR, FinetunePrecision, FinetuneSteps, MaxLength, Seed
from profiler.tasks.text_classification import TextClassification


class GlueMiniLM(TextClassification):
    """A packaged GLUE split with all-MiniLM-L6-v2 fine-tuned on its train split (a new head).

    Args:
        finetune_steps: optimizer steps of fine-tuning (AdamW, linear warm-up/decay).
        finetune_batch_size: examples per step.
        finetune_lr: peak learning rate.
        seed: seed for the head's initialisation and the batch order.
        max_length: tokens kept per example (longer ones are truncated).
        data_dir: folder with ``train.tsv`` and ``dev.tsv``; default: the packaged copy.
        finetune_precision: ``auto`` | ``fp32`` | ``bf16`` (see :mod:`pruners.training`).
    """

    glue_task: ClassVar[str] = ""

    def __init__(
        self,
        finetune_steps: FinetuneSteps = 1000,
        finetune_batch_size: FinetuneBatch = 32,
        finetune_lr: FinetuneLR = 1e-4,
        seed: Seed = 0,
        max_length: MaxLength = 128,
        data_dir: str | None = None,
        finetune_precision: FinetunePrecision = "auto",
    ) -> None:
        super().__init__(glue=self.glue_task, finetune_steps=finetune_steps, finetune_batch_size=finetune_batch_size,
                         finetune_lr=finetune_lr, seed=seed, max_length=max_length, data_dir=data_dir,
                         finetune_precision=finetune_precision)
        self.data_dir = self.eval_path.parent


class MRPC(GlueMiniLM):
    """GLUE MRPC paraphrase pairs on MiniLM: F1 (headline) and accuracy on all 408 dev pairs.
    Same as ``text-classification`` with ``glue = "mrpc"`` and these defaults."""

    name = "mrpc"
    glue_task = "mrpc"


class STSB(GlueMiniLM):
    """GLUE STS-B similarity on MiniLM with a regression head (num_labels = 1): Spearman (headline)
    and Pearson on all 1,500 dev pairs. Same as ``text-classification`` with ``glue = "stsb"``."""

    name = "stsb"
    glue_task = "stsb"
