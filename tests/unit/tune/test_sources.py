"""A measured profile's rows for `recommend`: each configuration's capacity read by the profiles'
rule (`capacity_step`), and the concurrency to verify it at."""

from __future__ import annotations

from pathlib import Path

from modelfleet.tune.recommend import price
from modelfleet.tune.schema import Machine, Measurement, Profile, Settings, Slo
from modelfleet.tune.sources import Found, measured_options
from tests.unit.tune.ramps import measurement, steps


def found(*measurements: Measurement) -> Found:
    machine = Machine(
        nproc=2,
        cpu_model="x",
        memory_bytes=None,
        platform="linux",
        python="3.11",
        modelfleet="0",
        onnxruntime=None,
    )
    profile = Profile(
        model="m",
        version="1",
        model_digest="0",
        created_at="2026-12-05T00:00:00+00:00",
        machine=machine,
        slo=Slo(p90_ms=100, margin=0.9),
        search="brute",
        step_duration_s=2,
        elapsed_s=1,
        measurements=list(measurements),
    )
    return Found(Path("profile.json"), profile)


def test_the_capacity_and_its_concurrency_are_the_knees() -> None:
    knee = Measurement(
        settings=Settings(max_batch_size=16),
        seq_len=32,
        steps=steps((4, 196, 24), (8, 235, 40), (16, 240, 88)),
        load_s=1,
        memory_bytes=1,
        stopped="slo",
    )
    (option,) = measured_options(found(knee), "c7i.large", 0.1, None, 32)
    assert (option.capacity_per_s, option.latency_ms, option.concurrency) == (235, 40, 8)
    document = price(option, 500).document()
    assert document["concurrency"] == 8 and document["instance_count"] == 3


def test_each_capacity_says_what_it_stands_on() -> None:
    """A final step, a confirmed step (a second window), or one short window: the quick search's
    choice can be the last when its best configuration's final step fell below another's window."""

    def ramp(batch: int, final: list[int] | None = None, confirmed: tuple[int, ...] = ()) -> Measurement:
        m = measurement(batch, 32, (8, 200, 40), (16, 230 + batch, 80), final=final)
        return m.model_copy(update={"confirmed": list(confirmed)})

    options = measured_options(
        found(ramp(1, final=[16]), ramp(2, confirmed=(16,)), ramp(4, confirmed=(8,)), ramp(8)),
        "c7i.large",
        0.1,
        None,
        32,
    )
    assert [(o.concurrency, o.basis) for o in options] == [
        (16, "final"),
        (16, "confirmed"),
        (16, "window"),  # c=8 was confirmed, the capacity step is c=16's window
        (16, "window"),
    ]
    assert price(options[0], 500).document()["capacity_basis"] == "final"
