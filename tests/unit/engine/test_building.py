"""What a model's config makes of its executor: batching limits and the inline opt-in (pure)."""

from pathlib import Path

from modelfleet.config import ServerSettings
from modelfleet.engine.building import CPU_MAX_ROWS, GPU_MAX_ROWS, batching, inline_max_us
from modelfleet.repository.config import DynamicBatching, ModelConfig


def config(**fields: object) -> ModelConfig:
    return ModelConfig.model_validate({"max_batch_size": 128} | fields)


def test_batching_rows_are_capped_by_device_unless_the_config_says() -> None:
    cpu = batching(config())
    gpu = batching(config(), gpu=True)
    assert cpu is not None and cpu.max_rows == CPU_MAX_ROWS
    assert gpu is not None and gpu.max_rows == GPU_MAX_ROWS
    own = batching(config(dynamic_batching=DynamicBatching(max_batch_size=100, max_queue_delay_us=250)))
    assert own is not None and own.max_rows == 100 and own.max_queue_delay_ns == 250_000
    small = batching(config(max_batch_size=4))
    assert small is not None and small.max_rows == 4


def test_preferred_sizes_above_the_rows_are_dropped() -> None:
    policy = DynamicBatching(max_batch_size=8, preferred_batch_sizes=[4, 8])
    chosen = batching(config(dynamic_batching=policy))
    assert chosen is not None and chosen.preferred == (4, 8)
    capped = batching(config(dynamic_batching=DynamicBatching(preferred_batch_sizes=[8, 32])))
    assert capped is not None and capped.preferred == (8,)


def test_no_batching_when_off_or_without_a_batch_dimension() -> None:
    assert batching(config(dynamic_batching=DynamicBatching(enabled=False))) is None
    assert batching(config(max_batch_size=0)) is None


def test_inline_is_the_models_choice_else_the_servers(tmp_path: Path) -> None:
    settings = ServerSettings(repository=tmp_path, inline_max_us=50)
    assert inline_max_us(config(), settings) == 50
    assert inline_max_us(config(inline_max_us=0), settings) == 0
    assert inline_max_us(config(inline_max_us=200), settings) == 200
