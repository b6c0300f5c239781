"""Classify reviews with a fine-tuned BERT: python predict.py "리뷰 문장" [...] or --file reviews.txt"""
from bert.train import classifier, wrap
from common.finetune import Classifier, predict_main

if __name__ == "__main__":
    predict_main(Classifier("bert", wrap, classifier))
