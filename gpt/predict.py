"""Classify reviews with a fine-tuned GPT: python predict.py "리뷰 문장" [...] or --file reviews.txt"""
from common.finetune import Classifier, predict_main
from gpt.train import classifier, wrap

if __name__ == "__main__":
    predict_main(Classifier("gpt", wrap, classifier))
