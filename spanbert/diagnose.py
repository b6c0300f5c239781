"""Representation-collapse check of SpanBERT's pretraining checkpoint (see common/diagnose.py).

  python diagnose.py                                   # save_pretrain.pth on the held-out slice
  python diagnose.py --checkpoint save_pretrain.pth.prev
"""
from common.diagnose import Pretraining, diagnose_main
from spanbert.data import DEFAULT_OUTPUT
from spanbert.model import SpanBertForPreTraining
from spanbert.pretrain import PretrainingDataset

if __name__ == "__main__":
    diagnose_main(Pretraining("spanbert", SpanBertForPreTraining, PretrainingDataset, DEFAULT_OUTPUT))
