"""Classify reviews with a fine-tuned SpanBERT: python predict.py "리뷰 문장" [...] or --file reviews.txt"""
from common.finetune import Classifier, predict_main
from spanbert.train import classifier, wrap

if __name__ == "__main__":
    predict_main(Classifier("spanbert", wrap, classifier))
