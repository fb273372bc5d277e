"""Masked-LM pretraining of a megatron-core BERT, launched by torchrun."""
