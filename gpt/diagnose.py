"""Representation-collapse check of GPT's pretraining checkpoint (see common/diagnose.py).

  python diagnose.py                                   # save_pretrain.pth on the held-out slice
  python diagnose.py --checkpoint save_pretrain.pth.prev
"""
from common.diagnose import diagnose_main
from gpt.pretrain import SPEC

if __name__ == "__main__":
    diagnose_main(SPEC)
