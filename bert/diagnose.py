"""Representation-collapse check of BERT's pretraining checkpoint (see common/diagnose.py).

  python diagnose.py                                   # save_pretrain.pth on the held-out slice
  python diagnose.py --checkpoint save_pretrain.pth.prev
"""
from bert.data import DEFAULT_OUTPUT
from bert.model import BertForPreTraining
from bert.pretrain import PretrainingDataset
from common.diagnose import Pretraining, diagnose_main

if __name__ == "__main__":
    diagnose_main(Pretraining("bert", BertForPreTraining, PretrainingDataset, DEFAULT_OUTPUT))
