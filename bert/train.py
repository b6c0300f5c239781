"""Fine-tune BERT on NSMC (run pretrain.py first, or it trains from scratch and says so)."""
from common.finetune import finetune_main
from bert.finetune_spec import SPEC

if __name__ == "__main__":
    finetune_main(SPEC)
