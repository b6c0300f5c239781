"""Shared code for the GPT, BERT and SpanBERT folders: config, device, vocab,
corpora, the Transformer blocks, the training loop, checkpoints and reporting."""
