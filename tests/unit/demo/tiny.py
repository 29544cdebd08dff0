"""A tiny stand-in for MiniLM with its signature, laid out on disk as the builder lays out minilm-sentiment
and minilm-base (same configs), so that tenants can be written and served without torch.

    input_ids, attention_mask [batch, seq] -> Gather(embeddings) -> masked mean -> Add(layer.0 bias)
      -> LayerNorm(layer.0) -> Add(layer.1 bias) -> LayerNorm(layer.1) -> embedding [batch, 384]
      -> Gemm(head) -> logits [batch, 2]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from modelfleet.demo.builder import (
    BASE,
    BASE_CONFIG,
    EMBEDDING_WIDTH,
    SENTIMENT,
    SENTIMENT_CONFIG,
    VERSION,
    _config_text,
)
from modelfleet.demo.onnx_files import HEAD_INITIALIZERS, save_with_external_weights, without_head
from modelfleet.demo.shared_weights import move_to_blobs, store_in, write_shared_model
from modelfleet.repository.config import CONFIG_FILENAME

VOCAB, HIDDEN = 16, EMBEDDING_WIDTH  # the embeddings are 24 KiB: page-aligned in a weights file
IDS = np.array([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]], np.int64)
FEEDS = {"input_ids": IDS, "attention_mask": (IDS > 0).astype(np.int64)}
EMBEDDINGS = "encoder.embeddings.word_embeddings.weight"
LAYER = "encoder.encoder.layer"
TUNED = [
    f"{LAYER}.1.output.dense.bias",
    f"{LAYER}.1.output.LayerNorm.weight",
    f"{LAYER}.1.output.LayerNorm.bias",
]
"""What BitFit changes in the tiny classifier: its last layer's bias and LayerNorm."""
_LN0 = [f"{LAYER}.0.output.LayerNorm.weight", f"{LAYER}.0.output.LayerNorm.bias"]


def tiny_classifier() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, scale: float = 1.0, mean: float = 0.0) -> TensorProto:
        return numpy_helper.from_array((mean + scale * rng.normal(size=shape)).astype(np.float32), name)

    inits = [
        init(EMBEDDINGS, VOCAB, HIDDEN),
        init(f"{LAYER}.0.output.dense.bias", HIDDEN),
        init(_LN0[0], HIDDEN, scale=0.1, mean=1.0),
        init(_LN0[1], HIDDEN, scale=0.1),
        init(TUNED[0], HIDDEN, scale=0.1),
        init(TUNED[1], HIDDEN, scale=0.1, mean=1.0),
        init(TUNED[2], HIDDEN, scale=0.1),
        init(HEAD_INITIALIZERS[0], 2, HIDDEN, scale=0.1),
        numpy_helper.from_array(np.array([0.5, -0.5], np.float32), HEAD_INITIALIZERS[1]),
    ]
    nodes = [
        # constants as nodes, not initializers: as the TorchScript exporter writes them
        helper.make_node(
            "Constant", [], ["seq_axis"], value=numpy_helper.from_array(np.array([1], np.int64))
        ),
        helper.make_node(
            "Constant", [], ["last_axis"], value=numpy_helper.from_array(np.array([-1], np.int64))
        ),
        helper.make_node("Gather", [EMBEDDINGS, "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["mean"]),
        helper.make_node("Add", ["mean", f"{LAYER}.0.output.dense.bias"], ["h1"]),
        helper.make_node("LayerNormalization", ["h1", *_LN0], ["h2"]),
        helper.make_node("Add", ["h2", TUNED[0]], ["h3"]),
        helper.make_node("LayerNormalization", ["h3", TUNED[1], TUNED[2]], ["pooled"]),
        helper.make_node("Gemm", ["pooled", *HEAD_INITIALIZERS], ["logits"], transB=1),
    ]
    tokens = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in FEEDS]
    graph = helper.make_graph(
        nodes,
        "tiny",
        tokens,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fake_minilm(repo: Path) -> tuple[Path, Path]:
    """repo/minilm-sentiment and repo/minilm-base from the tiny classifier, as the builder lays them
    out; their version folders."""
    sentiment = repo / SENTIMENT / VERSION
    sentiment.mkdir(parents=True)
    save_with_external_weights(tiny_classifier(), sentiment, inline=HEAD_INITIALIZERS)
    (repo / SENTIMENT / CONFIG_FILENAME).write_text(_config_text(SENTIMENT_CONFIG))
    base = repo / BASE / VERSION
    base.mkdir(parents=True)
    model = without_head(tiny_classifier(), "embedding")
    manifest = move_to_blobs(model, store_in(repo))
    write_shared_model(base, model.SerializeToString(), manifest.model_dump_json())
    (repo / BASE / CONFIG_FILENAME).write_text(_config_text(BASE_CONFIG))
    return sentiment, base


def run(model: Path | onnx.ModelProto, feeds: dict[str, np.ndarray] = FEEDS) -> np.ndarray:
    """The model's first output, its weights read by ONNX Runtime itself."""
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, feeds)[0]
    return out
