"""Representation-collapse check of GPT's pretraining checkpoint (see common/diagnose.py).

  python diagnose.py                                   # save_pretrain.pth on the held-out slice
  python diagnose.py --checkpoint save_pretrain.pth.prev
"""
from common.diagnose import Pretraining, diagnose_main
from gpt.data import DEFAULT_OUTPUT
from gpt.model import GPTLMHeadModel
from gpt.pretrain import WindowDataset

if __name__ == "__main__":
    diagnose_main(Pretraining("gpt", GPTLMHeadModel, WindowDataset, DEFAULT_OUTPUT))
