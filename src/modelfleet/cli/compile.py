"""`modelfleet compile SRC --out REPO/NAME`: a Hugging Face folder, an ONNX / TorchScript / torch.export
file or a scikit-learn / XGBoost / LightGBM model -> a checked model folder (docs/compile.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_TARGETS = ("cpu", "cuda", "tensorrt", "neuron")
_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_FORMATS = ("onnx", "torchscript")
_TASKS = ("embedding", "classification")
_EXTRA = {
    "torch", "transformers", "onnx", "onnxscript", "safetensors", "tokenizers",
    "sklearn", "skl2onnx", "onnxmltools", "onnxconverter_common", "xgboost", "lightgbm", "joblib",
}  # fmt: skip


def _numbers(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated whole numbers, e.g. 32,64,128") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{option} takes positive numbers")
    return values


def _choice(value: str | None, allowed: tuple[str, ...], option: str) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{option} must be one of {', '.join(allowed)}, not '{value}'")
    return value


def compile_command(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SRC",
            help="A Hugging Face folder (config.json + safetensors), an .onnx, TorchScript .pt or torch.export "
            ".pt2 file, an XGBoost .json / .ubj, a LightGBM .txt or a pickled scikit-learn estimator.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", metavar="REPO/NAME", help="The model folder to write.")],
    target: Annotated[str, typer.Option(help="cpu | cuda | tensorrt | neuron")] = "cpu",
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | bf16 | int8")] = "fp32",
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="onnx | torchscript (default: torchscript for bf16, else onnx)"),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="embedding | classification (default: from config.json's architectures)"),
    ] = None,
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", help="Shape buckets of the sequence axis.")
    ] = "32,64,128",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes to profile.")] = "1,8,16",
    calibration: Annotated[
        Path | None,
        typer.Option(help="Gate inputs: .npz (input_ids, attention_mask) or .txt (one text a line)."),
    ] = None,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate: least mean cosine.")] = 0.99,
    min_agreement: Annotated[
        float, typer.Option("--min-agreement", help="Gate: least top-1 agreement (classifiers).")
    ] = 0.99,
    max_abs_diff: Annotated[
        float | None, typer.Option("--max-abs-diff", help="Gate: largest absolute difference (unset: none).")
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Read pickle checkpoints (torch.load weights_only=True) and unpickle scikit-learn estimators "
            "(which runs their code: only files you trust).",
        ),
    ] = False,
    static_int8: Annotated[
        bool,
        typer.Option(
            "--static-int8", help="int8 with activation ranges calibrated on the gate's inputs (QDQ)."
        ),
    ] = False,
    build_engines: Annotated[
        bool,
        typer.Option(
            "--build-engines",
            help="tensorrt: build the TensorRT engines now, into the model folder (needs the provider and a GPU).",
        ),
    ] = False,
    trt_workspace_bytes: Annotated[
        int,
        typer.Option(
            "--trt-workspace-bytes", min=1 << 20, help="tensorrt: the engine builder's workspace (bytes)."
        ),
    ] = 2 << 30,
    profile_s: Annotated[
        float, typer.Option("--profile-s", min=0.0, help="Seconds per (bucket, batch) profile cell; 0 skips.")
    ] = 0.5,
    version: Annotated[
        int | None, typer.Option(min=1, help="Version folder (default: the next one).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the compile report here.")] = None,
) -> None:
    """Compile SRC into the model folder REPO/NAME: export, optimise, quantise, check numerics, profile.

    Writes REPO/NAME/config.yaml (signature, shape buckets, batch size) and REPO/NAME/VERSION/ with the
    model and compile.json. The accuracy gate compares the compiled model with the source on the
    calibration file or generated inputs; below the thresholds nothing is written and the report is
    kept as REPO/.NAME.compile-rejected.json (exit 1). A target or precision that cannot run here: exit 2.
    """
    from modelfleet.compile.errors import CompileError
    from modelfleet.compile.gate import Thresholds
    from modelfleet.compile.targets import Format, Precision, Target

    _choice(target, _TARGETS, "--target")
    _choice(precision, _PRECISIONS, "--precision")
    _choice(fmt, _FORMATS, "--format")
    _choice(task, _TASKS, "--task")
    try:
        from modelfleet.compile.pipeline import CompileRequest, compile_model

        request = CompileRequest(
            source=source,
            out=out,
            target=Target(target),
            precision=Precision(precision),
            format=Format(fmt) if fmt else None,
            task=task,
            seq_lens=_numbers(seq_lens, "--seq-lens"),
            batch_sizes=_numbers(batch_sizes, "--batch-sizes"),
            calibration=calibration,
            thresholds=Thresholds(min_cosine, min_agreement, max_abs_diff),
            trust_pickle=trust_pickle,
            static_int8=static_int8,
            build_engines=build_engines,
            trt_workspace_bytes=trt_workspace_bytes,
            profile_s=profile_s,
            version=version,
            report=report,
        )
        compile_model(request, log=typer.echo)
    except CompileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _EXTRA:
            raise
        typer.echo(
            f"error: {exc.name} is missing; install the compile extra: "
            "pip install torch==2.13.0 && pip install 'modelfleet[demo,compile]'",
            err=True,
        )
        raise typer.Exit(2) from None
