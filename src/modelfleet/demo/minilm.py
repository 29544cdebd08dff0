"""minilm-sentiment and minilm-base: all-MiniLM-L6-v2 and masked mean pooling, with and without a 2-class
head fitted on a few sentences, exported to ONNX and checked against PyTorch. Imports torch: load this
module only to build them.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    OPSET,
    read_initializers,
    save_with_external_weights,
    without_head,
)
from modelfleet.demo.request import load_tokenizer, minilm_files
from modelfleet.demo.sentences import NEGATIVE, POSITIVE
from modelfleet.demo.shared_weights import BlobSession, move_to_blobs, store_in, write_shared_model

TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX Runtime's and PyTorch's outputs."""
SENTIMENT_OUTPUT = "logits"
BASE_OUTPUT = "embedding"

_FIT_STEPS = 300
_FIT_LR = 0.05
_FIT_WEIGHT_DECAY = 1e-3
_LONG = "The delivery was late and the box was damaged, so I sent everything back the next morning."
# Batches of different sizes and padded lengths (4, 16, 21 and 97 tokens); the second is
# also the example the exporter traces.
_CHECK_BATCHES = (
    ("Fine.",),
    ("I love it.", "An unremarkable but pleasant afternoon in the park with friends."),
    ("Fine.", _LONG, "I love it."),
    (" ".join([_LONG] * 5), "Fine.", "Terrible.", _LONG, "Great."),
)


class ExportCheckError(RuntimeError):
    """The exported ONNX model does not compute what the PyTorch model computes."""


class SentimentClassifier(torch.nn.Module):
    """Encoder -> mean of the token embeddings under the attention mask -> Linear(hidden, 2).

    The attribute name `head` gives the exported initializers their names, HEAD_INITIALIZERS.
    """

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(mean_pool(self.encoder, input_ids, attention_mask))
        return logits


class MeanPooledEncoder(torch.nn.Module):
    """Encoder -> mean of the token embeddings under the attention mask: what minilm-base computes."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(self.encoder, input_ids, attention_mask)


def mean_pool(
    encoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return pooled


class MiniLMExport:
    """all-MiniLM-L6-v2 and its fitted head, exported to ONNX once and written as minilm-sentiment
    (self-contained) and minilm-base (no head, weights in the blob store), each checked against PyTorch.
    """

    def __init__(self, log: Callable[[str], None]) -> None:
        start = time.monotonic()
        self._log = log
        encoder = _load_encoder()
        head, accuracy = fit_head(encoder)
        log(f"minilm: head fitted on {len(POSITIVE) + len(NEGATIVE)} sentences, accuracy {accuracy:.0%}")
        self._classifier = SentimentClassifier(encoder, head).eval()
        self._pooled = MeanPooledEncoder(encoder).eval()
        self._proto = _to_onnx(self._classifier)
        try:
            read_initializers(self._proto, HEAD_INITIALIZERS)
        except ValueError as exc:
            raise ExportCheckError(f"the exported graph has no head for tenants to replace: {exc}") from None
        log(f"minilm: exported in {time.monotonic() - start:.1f} s")

    def write_sentiment(self, folder: Path) -> float:
        """folder/model.onnx and its weights file; the largest |ORT - torch| seen in the check."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self._proto)  # saving moves the weights out of the proto
        save_with_external_weights(proto, folder, inline=HEAD_INITIALIZERS)
        session = ort.InferenceSession(str(folder / MODEL_FILENAME), providers=["CPUExecutionProvider"])
        worst = check_export(self._classifier, lambda feeds: session.run([SENTIMENT_OUTPUT], feeds)[0])
        self._log(f"minilm-sentiment: written, max |ORT - torch| = {worst:.1e}")
        return worst

    def write_base(self, folder: Path, repo_root: Path) -> float:
        """The encoder and pooling with every weight stored as a blob under repo_root: folder/model.onnx,
        its empty placeholder and weights.json; the largest |ORT - torch| seen in the check."""
        proto = without_head(self._proto, BASE_OUTPUT)
        manifest = move_to_blobs(proto, store_in(repo_root))
        write_shared_model(folder, proto.SerializeToString(), manifest.model_dump_json())
        session = BlobSession(folder, repo_root)
        worst = check_export(self._pooled, lambda feeds: session.run([BASE_OUTPUT], feeds)[0])
        self._log(
            f"minilm-base: written, {len(manifest.tensors)} weight tensors in the blob store, "
            f"max |ORT - torch| = {worst:.1e}"
        )
        return worst


def _load_encoder() -> torch.nn.Module:
    # transformers draws a progress bar per load; our log lines say enough. Restored afterwards.
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        encoder: torch.nn.Module = AutoModel.from_pretrained(str(minilm_files()), attn_implementation="eager")
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    return encoder.eval()


def fit_head(encoder: torch.nn.Module) -> tuple[torch.nn.Linear, float]:
    """Logistic regression on the pooled embeddings of the sentences; class 1 = positive.

    Full-batch Adam from a zero start on a convex loss: the result needs no random seed.
    """
    with torch.no_grad():
        pooled = _pool_texts(encoder, [*NEGATIVE, *POSITIVE])
    labels = torch.tensor([0] * len(NEGATIVE) + [1] * len(POSITIVE))
    head = torch.nn.Linear(pooled.shape[1], 2)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.Adam(head.parameters(), lr=_FIT_LR, weight_decay=_FIT_WEIGHT_DECAY)
    for _ in range(_FIT_STEPS):
        optimizer.zero_grad()
        torch.autograd.backward(torch.nn.functional.cross_entropy(head(pooled), labels))
        optimizer.step()
    head.requires_grad_(False)
    accuracy = float((head(pooled).argmax(1) == labels).float().mean())
    return head, accuracy


def check_export(model: torch.nn.Module, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> float:
    """Compare ONNX Runtime (`run`, given the feeds) with PyTorch at several (batch, seq) shapes;
    the largest absolute difference, ExportCheckError beyond TOLERANCE."""
    worst = 0.0
    for texts in _CHECK_BATCHES:
        ids, mask = _tokenize(texts)
        with torch.inference_mode():
            expected = model(ids, mask).numpy()
        got = run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        if got.shape != expected.shape:
            raise ExportCheckError(f"ONNX output has shape {got.shape}, PyTorch's {expected.shape}")
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:  # also catches NaN
            raise ExportCheckError(
                f"ONNX and PyTorch outputs differ by {diff:.2e} (> {TOLERANCE:.0e}) "
                f"at (batch, seq) = {tuple(ids.shape)}"
            )
        worst = max(worst, diff)
    return worst


def _to_onnx(model: torch.nn.Module) -> onnx.ModelProto:
    """The TorchScript exporter's graph, with every weight inline."""
    ids, mask = _tokenize(_CHECK_BATCHES[1])
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad(), warnings.catch_warnings():
        exported = Path(scratch) / "minilm.onnx"
        _ignore_known_export_warnings()
        torch.onnx.export(
            model,
            (ids, mask),
            exported,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=[SENTIMENT_OUTPUT],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                SENTIMENT_OUTPUT: {0: "batch"},
            },
        )
        return onnx.load(str(exported))


def _ignore_known_export_warnings() -> None:
    """Warnings the TorchScript exporter always gives for this model; check_export covers their risks."""
    # We choose the TorchScript exporter on purpose (the brief of the demo repository).
    warnings.filterwarnings(
        "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
    )
    warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\.")
    # transformers' mask code compares a padding length that is always 0 for an encoder without cache.
    warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean", Warning, r"transformers\.")
    # Negative indices would be wrong in the exported graph; the encoder uses none.
    warnings.filterwarnings("ignore", "Exporting aten::index operator of advanced indexing", UserWarning)


def _pool_texts(encoder: torch.nn.Module, texts: Sequence[str]) -> torch.Tensor:
    ids, mask = _tokenize(texts)
    return mean_pool(encoder, ids, mask)


def _tokenize(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded: Any = load_tokenizer().encode_batch(list(texts))
    width = max(len(e.ids) for e in encoded)
    ids = torch.zeros((len(encoded), width), dtype=torch.int64)  # 0 is [PAD]
    mask = torch.zeros((len(encoded), width), dtype=torch.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.int64)
        mask[row, : len(e.ids)] = 1
    return ids, mask
