"""Classify reviews with a fine-tuned SpanBERT: python predict.py "리뷰 문장" [...] or --file reviews.txt"""
from common.finetune import predict_main
from spanbert.finetune_spec import SPEC

if __name__ == "__main__":
    predict_main(SPEC)
