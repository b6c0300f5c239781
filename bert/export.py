"""Export BERT to a Hugging Face transformers folder: BertForPreTraining (pretrained) or
BertForSequenceClassification (fine-tuned), with its tokenizer; or import a Hugging
Face BERT folder as a pretrained checkpoint for train.py (--import).

  python export.py --model save_pretrain.pth --out hf/     # or save_best.pth from train.py
  python export.py --import hf/ --out save_pretrain.pth    # then: python train.py

The mapping and its notes are in common/export.py; transformers comes from requirements-extra.txt.
"""
from pathlib import Path

from common.export import export_main

if __name__ == "__main__":
    export_main("bert", Path(__file__).resolve().parent, can_import=True)
