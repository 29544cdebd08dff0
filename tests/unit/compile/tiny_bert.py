"""Tiny BERT checkpoints for the compile tests: random weights from a config, saved as a Hugging Face
folder (config.json + model.safetensors). Nothing is downloaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

SEQ_LENS = (16, 32)


def tiny_bert(folder: Path, classification: bool = True, seed: int = 0, num_labels: int = 3) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        architectures=["BertForSequenceClassification" if classification else "BertModel"],
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if classification else BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(folder))
    return folder


def quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def head_only_copy(reference: Path, folder: Path, seed: int) -> Path:
    """`reference` with a classification head of its own (what fine-tuning only the head gives)."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(reference / "model.safetensors"))
    rng = np.random.default_rng(seed)
    for name in ("classifier.weight", "classifier.bias"):
        tensors[name] = (tensors[name] + rng.normal(0, 0.5, tensors[name].shape)).astype(np.float32)
    folder.mkdir(parents=True)
    shutil.copy(reference / "config.json", folder / "config.json")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
