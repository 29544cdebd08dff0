"""A Hugging Face folder as a PyTorch module with the signature the repository serves.

    embedding        input_ids, attention_mask [batch, seq] INT64 -> embedding [batch, hidden] FP32
                     (the encoder's token states, mean-pooled under the mask: sentence embeddings)
    classification   input_ids, attention_mask -> logits [batch, num_labels] FP32

Nothing is downloaded: the hub is switched off before transformers is imported. Imports torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from modelfleet.compile.errors import CompileError
from modelfleet.compile.source import CONFIG_JSON, Source

INPUT_NAMES = ("input_ids", "attention_mask")
# read by transformers and huggingface_hub when first imported (inside load_task_model)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


class Task(StrEnum):
    EMBEDDING = "embedding"
    CLASSIFICATION = "classification"


OUTPUT_NAMES = {Task.EMBEDDING: "embedding", Task.CLASSIFICATION: "logits"}


def default_task(config: dict[str, Any]) -> Task:
    """classification for *ForSequenceClassification architectures, else embedding."""
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return Task.CLASSIFICATION
    return Task.EMBEDDING


@dataclass
class TaskModel:
    module: torch.nn.Module  # in eval mode: (input_ids, attention_mask) -> one FP32 tensor
    task: Task
    output: str
    width: int  # the output's last dimension
    vocab_size: int
    max_positions: int


def load_task_model(source: Source, task: Task) -> TaskModel:
    """The model of `source` for `task`, weights loaded, in eval mode; CompileError when the
    architecture is unknown to transformers or its weights do not fit it."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    from modelfleet.demo.minilm import MeanPooledEncoder  # imports transformers: after the switches above

    factory = AutoModel if task == Task.EMBEDDING else AutoModelForSequenceClassification
    with _safetensors_folder(source) as folder, quiet_transformers():
        try:
            model = factory.from_pretrained(str(folder), attn_implementation="eager", local_files_only=True)
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            kind = source.config.get("model_type")
            raise CompileError(
                f"transformers cannot build {kind} model {source.path.name} for {task}: {_first_line(exc)}"
            ) from None
    model.eval()
    config = model.config
    module: torch.nn.Module = MeanPooledEncoder(model) if task == Task.EMBEDDING else LogitsOnly(model)
    width = int(config.hidden_size if task == Task.EMBEDDING else config.num_labels)
    return TaskModel(
        module.eval(),
        task,
        OUTPUT_NAMES[task],
        width,
        int(getattr(config, "vocab_size", 0) or 0),
        int(getattr(config, "max_position_embeddings", 0) or 0),
    )


class LogitsOnly(torch.nn.Module):
    """A sequence classifier's logits tensor alone (not its output dataclass)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


@contextmanager
def _safetensors_folder(source: Source) -> Iterator[Path]:
    """The source folder itself, or for a trusted pickle checkpoint a temporary copy with its
    weights read by torch.load(weights_only=True) and written as safetensors."""
    if not source.pickled:
        yield source.path
        return
    from safetensors.torch import save_file

    (checkpoint,) = source.weights
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CompileError(f"{checkpoint.name} cannot be read as weights only: {_first_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint's usual nesting
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CompileError(f"{checkpoint.name} is not a state dict (name -> tensor)")
    with tempfile.TemporaryDirectory(prefix="modelfleet-compile-") as scratch:
        folder = Path(scratch)
        shutil.copy(source.path / CONFIG_JSON, folder / CONFIG_JSON)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
        yield folder


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or load reports: our report says what was loaded."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
