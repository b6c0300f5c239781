"""Fine-tune SpanBERT on NSMC (run pretrain.py first, or it trains from scratch and says so).

    python train.py --logit cls      # or mean / max
"""
from common.finetune import finetune_main
from spanbert.finetune_spec import SPEC

if __name__ == "__main__":
    finetune_main(SPEC)
