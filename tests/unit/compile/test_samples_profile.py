from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelfleet.compile.errors import CompileError
from modelfleet.compile.profile import best_batch, profile
from modelfleet.compile.samples import from_file, generated


def test_generated_rows_fill_each_bucket_up_to_its_length() -> None:
    batches = generated([8, 16], vocab_size=100, tokenizer=None, rows=4)
    assert [b.seq_len for b in batches] == [8, 16]
    for batch in batches:
        ids, mask = batch.feeds["input_ids"], batch.feeds["attention_mask"]
        assert ids.shape == mask.shape == (4, batch.seq_len)
        assert mask[-1].all() and (mask.sum(1) >= batch.seq_len // 2).all()
        assert (ids[mask == 0] == 0).all() and (ids[mask == 1] >= 25).all() and ids.max() < 100


def test_calibration_files(tmp_path: Path) -> None:
    ids = np.array([[5, 6, 7, 0], [8, 9, 10, 11], [1, 0, 0, 0]], np.int64)
    np.savez(tmp_path / "c.npz", input_ids=ids, attention_mask=(ids > 0).astype(np.int64))
    batches = from_file(tmp_path / "c.npz", [2, 4], tokenizer=None)
    assert [(b.seq_len, b.feeds["input_ids"].tolist()) for b in batches] == [
        (2, [[1, 0]]),
        (4, [[5, 6, 7, 0], [8, 9, 10, 11]]),
    ]
    (tmp_path / "c.txt").write_text("hello\n")
    with pytest.raises(CompileError, match="no tokenizer.json to encode them"):
        from_file(tmp_path / "c.txt", [4], tokenizer=None)
    np.savez(tmp_path / "bad.npz", ids=ids)
    with pytest.raises(CompileError, match="no array 'input_ids'"):
        from_file(tmp_path / "bad.npz", [4], tokenizer=None)
    (tmp_path / "c.csv").write_text("1,2")
    with pytest.raises(CompileError, match=r"use .npz \(arrays\) or .txt"):
        from_file(tmp_path / "c.csv", [4], tokenizer=None)
    with pytest.raises(CompileError, match="does not exist"):
        from_file(tmp_path / "missing.npz", [4], tokenizer=None)


def test_profile_cells_and_best_batch_with_an_injected_clock() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(feeds["input_ids"])
        now[0] += 0.001 * (1 + rows)  # 1 ms fixed + 1 ms a row: bigger batches are faster per row
        return np.zeros((rows, 2), np.float32)

    cells = profile(run, [4, 8], [1, 4], vocab_size=50, seconds=0.01, clock=clock)
    assert [(c.seq_len, c.batch_size, c.latency_ms) for c in cells] == [
        (4, 1, 2.0),
        (4, 4, 5.0),
        (8, 1, 2.0),
        (8, 4, 5.0),
    ]
    assert cells[1].throughput_per_s == 800.0 and cells[1].runs >= 3
    assert best_batch(cells) == 4
