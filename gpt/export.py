"""Export GPT to a Hugging Face transformers folder: OpenAIGPTLMHeadModel (pretrained)
or OpenAIGPTForSequenceClassification (fine-tuned), with its tokenizer.

  python export.py --model save_pretrain.pth --out hf/     # or save_best.pth from train.py

The mapping and its notes are in common/export.py; transformers comes from requirements-extra.txt.
"""
from pathlib import Path

from common.export import export_main

if __name__ == "__main__":
    export_main("gpt", Path(__file__).resolve().parent)
