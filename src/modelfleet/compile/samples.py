"""The inputs the accuracy gate runs: a calibration file, or generated per task and shape bucket.

Text models with a tokenizer.json get the demo's English sentences joined up to each bucket's
length (real text quantises like real traffic; random token ids are harsher than any user);
others get random token ids. A calibration file is `.npz` (arrays named like the inputs,
[rows, seq]) or `.txt` (one text per line, tokenised with the source's tokenizer.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.compile.errors import CompileError

ROWS_PER_BUCKET = 8
_SEED = 14
_FIRST_ID = 1000  # above BERT-style vocabularies' special and unused tokens


@dataclass(frozen=True)
class Batch:
    seq_len: int
    feeds: dict[str, np.ndarray]  # input_ids, attention_mask: INT64 [rows, seq_len]


def generated(
    seq_lens: Sequence[int], vocab_size: int, tokenizer: Path | None, rows: int = ROWS_PER_BUCKET
) -> list[Batch]:
    """`rows` samples per bucket, lengths between half the bucket and the bucket (the last row full)."""
    rng = np.random.default_rng(_SEED)
    texts = _sentences(rng, rows * len(seq_lens)) if tokenizer is not None else None
    batches = []
    for index, seq in enumerate(seq_lens):
        lengths = [int(x) for x in rng.integers(max(1, seq // 2), seq + 1, rows - 1)] + [seq]
        if texts is not None and tokenizer is not None:
            chunk = texts[index * rows : (index + 1) * rows]
            ids = [_encode(tokenizer, text, length) for text, length in zip(chunk, lengths, strict=True)]
        else:
            low = min(_FIRST_ID, max(vocab_size // 4, 1))
            ids = [list(rng.integers(low, max(vocab_size, low + 1), length)) for length in lengths]
        batches.append(Batch(seq, _padded(ids, seq)))
    return batches


def from_file(path: Path, seq_lens: Sequence[int], tokenizer: Path | None) -> list[Batch]:
    """The calibration file's rows, each padded to the smallest bucket that holds it."""
    if not path.is_file():
        raise CompileError(f"calibration file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "input_ids" not in data:
                raise CompileError(f"{path.name} has no array 'input_ids' (it has {sorted(data.files)})")
            ids_array = np.asarray(data["input_ids"], dtype=np.int64)
            mask = np.asarray(data["attention_mask"], dtype=np.int64) if "attention_mask" in data else None
        if ids_array.ndim != 2:
            raise CompileError(f"{path.name}: input_ids must be [rows, seq], got {list(ids_array.shape)}")
        lengths = mask.sum(axis=1) if mask is not None else np.full(len(ids_array), ids_array.shape[1])
        rows = [list(ids_array[i, : int(lengths[i])]) for i in range(len(ids_array))]
    elif path.suffix == ".txt":
        if tokenizer is None:
            raise CompileError(
                f"{path.name} holds texts, but the source has no tokenizer.json to encode them"
            )
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [_encode(tokenizer, line, max(seq_lens)) for line in lines]
    else:
        raise CompileError(f"calibration file {path.name}: use .npz (arrays) or .txt (one text per line)")
    if not rows:
        raise CompileError(f"calibration file {path.name} holds no samples")
    by_bucket: dict[int, list[list[int]]] = {}
    for ids in rows:
        seq = next((s for s in seq_lens if s >= len(ids)), max(seq_lens))
        by_bucket.setdefault(seq, []).append(ids[:seq])
    return [Batch(seq, _padded(group, seq)) for seq, group in sorted(by_bucket.items())]


def _sentences(rng: np.random.Generator, count: int) -> list[str]:
    from modelfleet.demo.sentences import NEGATIVE, POSITIVE

    pool = [*POSITIVE, *NEGATIVE]
    # long enough for any bucket: cut to length after tokenising
    return [" ".join(rng.choice(pool, 64)) for _ in range(count)]


def _encode(tokenizer: Path, text: str, length: int) -> list[int]:
    ids: list[int] = _tokenizer(tokenizer).encode(text).ids
    return ids[:length]


@cache
def _tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_file(str(path))
    encoder.no_padding()
    encoder.no_truncation()
    return encoder


def _padded(rows: Sequence[Sequence[int]], seq: int) -> dict[str, np.ndarray]:
    ids = np.zeros((len(rows), seq), np.int64)
    mask = np.zeros((len(rows), seq), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}
