"""Settings written into config.yaml: only the tuned keys change, and the result is a valid config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelfleet.tune.apply import planned, with_settings, write
from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.schema import Settings


def test_batching_instances_and_threads_written_other_keys_kept() -> None:
    old = "pinned: true\ndynamic_batching:\n  preferred_batch_sizes: [4, 32]\n"
    new = yaml.safe_load(
        with_settings(
            old, Settings(max_batch_size=8, max_queue_delay_us=500, instances=2, intra_op_threads=1), "m"
        )
    )
    assert new == {
        "pinned": True,
        "dynamic_batching": {
            "preferred_batch_sizes": [4],
            "enabled": True,
            "max_batch_size": 8,
            "max_queue_delay_us": 500,
        },
        "instances": 2,
        "onnxruntime": {"intra_op_threads": 1},
    }


def test_batch_size_one_turns_batching_off() -> None:
    new = yaml.safe_load(with_settings("", Settings(), "m"))
    assert new == {"dynamic_batching": {"enabled": False}, "instances": 1}


def test_invalid_result_or_file_is_refused() -> None:
    with pytest.raises(TuneInputError, match="not valid YAML"):
        with_settings("a: [", Settings(), "m")
    with pytest.raises(TuneInputError, match="must be a mapping"):
        with_settings("- 1\n", Settings(), "m")
    with pytest.raises(TuneInputError, match="invalid config"):
        with_settings("name: other\n", Settings(), "m")


def test_planned_then_written(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text("instances: 1\n")
    change = planned(tmp_path / "m", Settings(instances=2))
    assert "-instances: 1" in change.diff and "+instances: 2" in change.diff
    assert (tmp_path / "m" / "config.yaml").read_text() == "instances: 1\n"  # nothing written yet
    write(change)
    assert yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())["instances"] == 2


def test_opening_comments_and_flow_lists_kept() -> None:
    old = (
        "# Written by a tool.\nbackend: onnxruntime\ninputs:\n- name: x\n  datatype: FP32\n  shape: [-1, 2]\n"
    )
    new = with_settings(old, Settings(instances=2), "m")
    assert new.startswith("# Written by a tool.\nbackend: onnxruntime\n")
    assert "  shape: [-1, 2]\n" in new


TEXT_MODEL = """backend: onnxruntime
max_batch_size: 8
inputs:
- {name: input_ids, datatype: INT64, shape: [-1, -1]}
- {name: attention_mask, datatype: INT64, shape: [-1, -1]}
outputs:
- {name: tokens, datatype: FP32, shape: [-1, -1, 4]}
- {name: logits, datatype: FP32, shape: [-1, 2]}
"""


def test_shape_buckets_pad_the_inputs_that_vary_on_axis_1() -> None:
    new = yaml.safe_load(with_settings(TEXT_MODEL, Settings(max_batch_size=8, shape_buckets=(32, 128)), "m"))
    assert new["shape_buckets"] == {
        "axis": 1,
        "sizes": [32, 128],
        "pad": {"input_ids": 0, "attention_mask": 0},
        "outputs": {"tokens": 1},
    }
    removed = yaml.safe_load(with_settings(yaml.safe_dump(new), Settings(shape_buckets=()), "m"))
    assert "shape_buckets" not in removed
    kept = yaml.safe_load(with_settings(yaml.safe_dump(new), Settings(max_batch_size=4), "m"))
    assert kept["shape_buckets"] == new["shape_buckets"]  # not swept: left as it was


def test_shape_buckets_need_declared_inputs() -> None:
    with pytest.raises(TuneInputError, match="declare m's inputs"):
        with_settings("max_batch_size: 8\n", Settings(shape_buckets=(32,)), "m")
