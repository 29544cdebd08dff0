"""The source model opened for the compile steps: its input names, output, width, vocabulary and a
reference runner (the source itself, fp32), whatever its kind (Hugging Face folder, ONNX,
TorchScript or torch.export program). Token models only: (input_ids, attention_mask[, token_type_ids])
[batch, seq] -> one tensor [batch, width].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelfleet.compile.errors import CompileError, Unsupported
from modelfleet.compile.source import Source, SourceKind

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class Model:
    """What the steps need to know about the source, whatever its kind."""

    inputs: list[str]
    output: str
    width: int
    vocab_size: int
    task: str
    reference: Runner  # the source model, fp32
    torch_module: object | None = None  # torch sources: what is exported or traced
    program: object | None = None  # torch.export sources: the ExportedProgram (exported by dynamo)
    tokenizer: Path | None = None
    max_positions: int = 0  # 0: unknown


def open_onnx(path: Path, task: str | None) -> Model:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # failures reach the user through the exception
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompileError(f"ONNX Runtime cannot load {path.name}: {str(exc)[:300]}") from None
    names = [i.name for i in session.get_inputs()]
    if "input_ids" not in names or not set(names) <= set(TOKEN_INPUTS):
        raise Unsupported(
            f"{path.name} takes {names}: ONNX sources are compiled when they take token ids "
            f"({', '.join(TOKEN_INPUTS)}); other signatures are not supported yet"
        )
    outputs = session.get_outputs()
    width = outputs[0].shape[-1] if outputs[0].shape and isinstance(outputs[0].shape[-1], int) else -1
    first = outputs[0].name

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = session.run([first], feeds)[0]
        return result

    task = task or ("classification" if first == "logits" else "embedding")
    return Model(names, first, width, _onnx_vocab_size(path), task, reference)


def open_torchscript(path: Path, task: str | None) -> Model:
    """A TorchScript module taking (input_ids, attention_mask) and returning one tensor
    [batch, width]: its width is read from one run; the vocabulary from its embedding table."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
            module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise CompileError(f"torch cannot load {path.name}: {str(exc).strip()[:300]}") from None
    return _token_module(path, module, task, vocab=_embedding_rows(module))


def _token_module(path: Path, module: object, task: str | None, vocab: int, program: object = None) -> Model:
    """A torch module taking (input_ids, attention_mask) [batch, seq] and answering one tensor
    [batch, width]: its width is read from one run."""
    from modelfleet.compile import torchscript_steps

    run = torchscript_steps.runner(module, ["input_ids", "attention_mask"])
    probe = np.ones((2, 8), np.int64)  # not 1: torch.export specialises dimensions of size 1
    try:
        out = run({"input_ids": probe, "attention_mask": probe})
    except Exception as exc:
        raise Unsupported(
            f"{path.name} does not take (input_ids, attention_mask) [batch, seq] and answer one tensor: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
        ) from None
    if not isinstance(out, np.ndarray) or out.ndim != 2:
        raise Unsupported(
            f"{path.name} answers {getattr(out, 'shape', type(out))}, not one [batch, width] tensor"
        )
    task = task or "embedding"
    output = "logits" if task == "classification" else "embedding"

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = np.asarray(run(feeds), dtype=np.float32)
        return result

    return Model(
        ["input_ids", "attention_mask"], output, int(out.shape[1]), vocab, task, reference, module, program
    )


def _onnx_vocab_size(path: Path) -> int:
    """Rows of the embedding table that input_ids index (a Gather of an initializer), else 100:
    generated ids stay below it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == "input_ids":
            table = tables.get(node.input[0])
            if table is not None and table.dims:
                return int(table.dims[0])
    return 100


def open_model(source: Source, task: str | None) -> Model:
    if source.kind == SourceKind.ONNX:
        return open_onnx(source.path, task)
    if source.kind == SourceKind.TORCHSCRIPT:
        return open_torchscript(source.path, task)
    if source.kind == SourceKind.PROGRAM:
        return open_program(source.path, task)
    from modelfleet.compile import hf

    chosen = hf.Task(task) if task is not None else hf.default_task(source.config)
    loaded = hf.load_task_model(source, chosen)
    module = loaded.module
    import torch

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[n]) for n in hf.INPUT_NAMES))
        result: np.ndarray = out.float().numpy()
        return result

    return Model(
        inputs=list(hf.INPUT_NAMES),
        output=loaded.output,
        width=loaded.width,
        vocab_size=loaded.vocab_size,
        task=chosen,
        reference=reference,
        torch_module=module,
        tokenizer=source.tokenizer,
        max_positions=loaded.max_positions,
    )


def open_program(path: Path, task: str | None) -> Model:
    """A `torch.export.save` archive of a module taking (input_ids, attention_mask) with batch and
    sequence exported as dynamic dimensions (torch.export.Dim); static ones are refused by name."""
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise CompileError(
            f"torch cannot load {path.name} as a torch.export program: {str(exc).strip()[:300]}"
        ) from None
    names = list(program.graph_signature.user_inputs)
    if names != ["input_ids", "attention_mask"]:
        raise Unsupported(
            f"{path.name} takes {names}: torch.export sources must take (input_ids, attention_mask)"
        )
    shapes = {
        n.name: n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in names
    }
    static = {
        name: list(shape) for name, shape in shapes.items() if any(isinstance(d, int) for d in shape[:2])
    }
    if static:
        raise Unsupported(
            f"{path.name} was exported with static shapes {static}: export it with "
            "dynamic_shapes={'input_ids': {0: Dim('batch'), 1: Dim('seq')}, 'attention_mask': same}"
        )
    from modelfleet.compile.torchscript_steps import ProgramModule

    module = ProgramModule(program.module())
    return _token_module(path, module, task, vocab=_embedding_rows(module), program=program)


def _embedding_rows(module: object) -> int:
    import torch

    assert isinstance(module, torch.nn.Module)
    tables = [p for name, p in module.named_parameters() if "embed" in name and p.dim() == 2]
    return int(tables[0].shape[0]) if tables else 100
