import io

import pytest

from modelfleet.bench.encode import Body
from modelfleet.bench.messages import (
    Go,
    OpenLoopJob,
    OpenShareResult,
    ShareJob,
    ShareResult,
    Workload,
    read_message,
    write_message,
)
from modelfleet.bench.spec import Arrivals, Phase, Popularity, Target


@pytest.mark.parametrize(
    "open_loop", [None, OpenLoopJob([Phase(1.5, 100), Phase(2, 400)], Arrivals.POISSON, share=1, shares=2)]
)
def test_job_round_trip(open_loop: OpenLoopJob | None) -> None:
    job = ShareJob(
        workload=Workload(
            target=Target.parse("http://h:1"),
            models=["a"],
            bodies=[Body(b"\x00raw", "application/octet-stream", 1)],
            body_sets=[[0]],
            model_body_set=[0],
            popularity=Popularity.ZIPF,
            zipf_s=1.2,
        ),
        connections=4,
        warmup_s=1.0,
        duration_s=2.0,
        timeout_s=3.0,
        seed=7,
        open_loop=open_loop,
    )
    stream = io.BytesIO()
    write_message(stream, job)
    write_message(stream, Go())
    stream.seek(0)
    assert read_message(stream, ShareJob) == job
    assert read_message(stream, Go) == Go()


def test_result_round_trip_and_truncation() -> None:
    result = ShareResult(b"\x01" * 16, b"\x00" * 8, {"connect": 2}, {3: 1}, 0, 0.25)
    stream = io.BytesIO()
    write_message(stream, result)
    data = stream.getvalue()
    assert read_message(io.BytesIO(data), ShareResult) == result
    with pytest.raises(EOFError):
        read_message(io.BytesIO(data[:-1]), ShareResult)
    with pytest.raises(EOFError):
        read_message(io.BytesIO(b""), ShareResult)


def test_open_result_round_trip() -> None:
    result = OpenShareResult(
        b"\x01" * 16, b"\x00" * 16, b"\x02" * 16, b"\xc8\x00" * 2, b"\x00" * 8, 3, 0.5, 7
    )
    stream = io.BytesIO()
    write_message(stream, result)
    stream.seek(0)
    assert read_message(stream, OpenShareResult) == result
