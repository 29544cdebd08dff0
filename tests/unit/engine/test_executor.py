import asyncio
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from modelfleet.engine.executor import Batching, ModelExecutor
from modelfleet.errors import BadRequest, DeadlineExceeded, InferenceFailed, Overloaded
from modelfleet.protocol.v2 import TensorSpec
from tests.waiting import entered, until


class Doubler:
    """A runtime that doubles its input; optionally waits on a gate to hold jobs in the queue."""

    inputs = [TensorSpec("x", "FP32", (-1,))]
    outputs = [TensorSpec("y", "FP32", (-1,))]
    may_run_inline = False  # user code that may block or wait

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0
        self.threads: set[str] = set()

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.gate.wait(5)
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if inputs["x"].size == 0:
            raise BadRequest("empty")
        return [inputs["x"] * 2]

    def unload(self) -> None:
        pass


async def test_runs_off_the_event_loop_and_returns_timings() -> None:
    runtime = Doubler()
    executor = ModelExecutor(runtime, "m/1", max_queue_size=4)
    job = await executor.run({"x": np.array([1.0, 2.0])}, ["y"])
    assert job.future.result()[0].tolist() == [2.0, 4.0]
    assert job.enqueued_ns <= job.started_ns <= job.finished_ns
    assert runtime.threads == {"model:m/1#0"}
    assert executor.pending == 0
    await executor.close()


async def test_errors_reach_the_caller_and_the_executor_keeps_going() -> None:
    executor = ModelExecutor(Doubler(), "m/1", max_queue_size=4)
    with pytest.raises(BadRequest, match="empty"):
        await executor.run({"x": np.array([])}, ["y"])
    job = await executor.run({"x": np.array([3.0])}, ["y"])
    assert job.future.result()[0].tolist() == [6.0]
    await executor.close()


async def test_full_queue_is_refused_at_once() -> None:
    runtime = Doubler()
    runtime.gate.clear()
    executor = ModelExecutor(runtime, "m/1", max_queue_size=2)
    held = [asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"])) for _ in range(2)]
    await until(lambda: executor.pending == 2, "both jobs queued")
    with pytest.raises(Overloaded, match="model 'm/1' has too many requests queued"):
        await executor.run({"x": np.array([1.0])}, ["y"])
    runtime.gate.set()
    await asyncio.gather(*held)
    await executor.close()


async def test_cancelled_jobs_are_never_executed() -> None:
    runtime = Doubler()
    runtime.gate.clear()
    executor = ModelExecutor(runtime, "m/1", max_queue_size=8)
    first = asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"]))
    second = asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"]))
    await until(lambda: executor.pending == 2, "both jobs queued")
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    runtime.gate.set()
    await first
    await executor.close()
    assert runtime.calls == 1
    assert executor.pending == 0


async def test_close_drains_queued_jobs() -> None:
    runtime = Doubler()
    runtime.gate.clear()
    executor = ModelExecutor(runtime, "m/1", max_queue_size=8)
    tasks = [asyncio.create_task(executor.run({"x": np.array([float(i)])}, ["y"])) for i in range(3)]
    await until(lambda: executor.pending == 3, "three jobs queued")
    closing = asyncio.create_task(executor.close())
    runtime.gate.set()
    results = await asyncio.gather(*tasks)
    await closing
    assert [j.future.result()[0].tolist() for j in results] == [[0.0], [2.0], [4.0]]


class Stepper:
    """A runtime whose every call waits for its own permission, so the test decides the order."""

    inputs = Doubler.inputs
    outputs = Doubler.outputs
    may_run_inline = False

    def __init__(self) -> None:
        self.entered = [threading.Event() for _ in range(3)]
        self.allowed = [threading.Event() for _ in range(3)]
        self.calls = 0

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.entered[self.calls].set()
        self.allowed[self.calls].wait(5)
        self.calls += 1
        return [inputs["x"]]

    def unload(self) -> None:
        pass


def ticking(step_ns: int):  # type: ignore[no-untyped-def]
    now = [0]

    def clock() -> int:
        now[0] += step_ns
        return now[0]

    return clock


async def queue_three(executor: ModelExecutor) -> list[asyncio.Task[object]]:
    tasks = [asyncio.create_task(executor.run({"x": np.array([float(i)])}, ["y"])) for i in range(3)]
    await until(lambda: executor.pending == 3, "three jobs queued")
    return tasks  # type: ignore[return-value]


async def test_slow_jobs_are_handed_back_one_by_one() -> None:
    runtime = Stepper()
    executor = ModelExecutor(runtime, "m/1", 8, clock=ticking(1_000_000))  # every job "takes" 1 ms
    first, second, third = await queue_three(executor)
    runtime.allowed[0].set()
    await asyncio.wait_for(first, 5)  # answered while the second is still waiting to run
    assert not second.done()
    runtime.allowed[1].set()
    runtime.allowed[2].set()
    await asyncio.gather(second, third)
    await executor.close()


async def test_fast_jobs_are_handed_back_together() -> None:
    runtime = Stepper()
    executor = ModelExecutor(runtime, "m/1", 8, clock=ticking(1))  # every job "takes" 1 ns
    tasks = await queue_three(executor)
    runtime.allowed[0].set()
    runtime.allowed[1].set()
    # The third run has begun, so the first two are finished. Had the thread handed them back
    # before it, that hand-back would be on the loop ahead of this wake-up (the thread queued it
    # first), and their tasks would be done by now.
    await entered(runtime.entered[2], "the third run began")
    assert not any(t.done() for t in tasks)  # the group waits for the third job
    runtime.allowed[2].set()
    await asyncio.gather(*tasks)
    await executor.close()


async def test_a_fault_in_the_executor_thread_fails_the_jobs_instead_of_hanging_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executor = ModelExecutor(Doubler(), "m/1", 8)

    def broken(jobs: list[object]) -> tuple[list[list[object]], list[object]]:
        raise RuntimeError("bug")

    monkeypatch.setattr(executor, "_next", broken)
    with pytest.raises(InferenceFailed, match="model 'm/1' failed: RuntimeError"):
        await asyncio.wait_for(executor.run({"x": np.array([1.0])}, ["y"]), 5)
    monkeypatch.undo()
    job = await executor.run({"x": np.array([2.0])}, ["y"])  # the thread is still serving
    assert job.future.result()[0].tolist() == [4.0]
    await executor.close()


# -- timeouts, priorities, batching shapes, instances ---------------------------------------------------


class Gated:
    """A runtime whose calls wait for the gate and record the first input value of each call."""

    inputs = Doubler.inputs
    outputs = Doubler.outputs
    may_run_inline = False

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()  # a call has begun
        self.seen: list[list[float]] = []
        self.threads: set[str] = set()

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.entered.set()
        self.gate.wait(5)
        self.seen.append(inputs["x"].tolist())
        self.threads.add(threading.current_thread().name)
        return [inputs["x"]]

    def unload(self) -> None:
        pass


async def test_a_queued_request_past_its_timeout_gets_504_and_never_runs() -> None:
    runtime = Gated()
    executor = ModelExecutor(runtime, "m/1", 8)
    first = asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"]))
    await entered(runtime.entered, "the first one is running (blocked on the gate)")
    with pytest.raises(DeadlineExceeded, match="model 'm/1': request timed out after 0.05 s while queued"):
        await executor.run({"x": np.array([2.0])}, ["y"], timeout_s=0.05)
    runtime.gate.set()
    await first
    await executor.close()
    assert runtime.seen == [[1.0]]  # the expired one never ran


async def test_higher_priority_runs_first_and_sheds_lower_priority_when_full() -> None:
    runtime = Gated()
    executor = ModelExecutor(runtime, "m/1", max_queue_size=3)
    blocker = asyncio.create_task(executor.run({"x": np.array([0.0])}, ["y"]))
    await entered(runtime.entered, "the blocker is running")
    low = asyncio.create_task(executor.run({"x": np.array([3.0])}, ["y"], priority=3))
    default = asyncio.create_task(executor.run({"x": np.array([9.0])}, ["y"]))
    await until(lambda: executor.pending == 3, "low and default queued behind the blocker")
    high = asyncio.create_task(
        executor.run({"x": np.array([1.0])}, ["y"], priority=1)
    )  # full: sheds 'default'
    with pytest.raises(Overloaded, match="a higher-priority request took this one's place"):
        await default  # shed when 'high' was queued
    runtime.gate.set()
    await asyncio.gather(blocker, low, high)
    await executor.close()
    assert runtime.seen == [[0.0], [1.0], [3.0]]  # the queued ones by priority: 1 before 3


async def test_batches_are_cut_at_preferred_sizes() -> None:
    runtime = Gated()
    executor = ModelExecutor(runtime, "m/1", 64, Batching(max_rows=16, preferred=(2, 4)))
    blocker = asyncio.create_task(executor.run({"x": np.array([0.0])}, ["y"]))
    await entered(runtime.entered, "the blocker is running")
    tasks = [asyncio.create_task(executor.run({"x": np.array([float(i)])}, ["y"])) for i in range(1, 8)]
    await until(lambda: executor.pending == 8, "seven jobs queued behind the blocker")
    runtime.gate.set()
    jobs = await asyncio.gather(*tasks)
    await blocker
    await executor.close()
    assert [len(batch) for batch in runtime.seen] == [1, 4, 2, 1]  # 7 queued: 4 + 2 + 1
    assert [j.future.result()[0].tolist() for j in jobs] == [[float(i)] for i in range(1, 8)]


class Meeting(Gated):
    """A runtime whose calls go on only once `parties` of them are under way at the same time."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.gate.set()
        self.met = threading.Barrier(parties, timeout=5)  # broken (an error) if they never overlap

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.met.wait()
        return super().infer(inputs, outputs)


async def test_instances_run_side_by_side() -> None:
    runtime = Meeting(2)
    executor = ModelExecutor(runtime, "m/1", 8, instances=2)
    tasks = [asyncio.create_task(executor.run({"x": np.array([float(i)])}, ["y"])) for i in range(2)]
    await asyncio.gather(*tasks)  # fails with BrokenBarrierError if the two runs were serialised
    await executor.close()
    assert runtime.threads == {"model:m/1#0", "model:m/1#1"}


async def test_a_flooding_tenant_does_not_queue_the_others_behind_it() -> None:
    """Round robin over senders: a quiet tenant's request runs in the next batch, not after the flood."""
    runtime = Gated()
    executor = ModelExecutor(runtime, "base/1", 256, Batching(max_rows=4))
    blocker = asyncio.create_task(executor.run({"x": np.array([0.0])}, ["y"], label="noisy"))
    await entered(runtime.entered, "the blocker is running")
    flood = [
        asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"], label="noisy")) for _ in range(40)
    ]
    await until(lambda: executor.pending == 41, "the flood queued")
    quiet = asyncio.create_task(executor.run({"x": np.array([2.0])}, ["y"], label="quiet"))
    await until(lambda: executor.pending == 42, "the quiet tenant's request queued after the flood")
    runtime.gate.set()
    await asyncio.gather(blocker, quiet, *flood)
    await executor.close()
    assert runtime.seen[0] == [0.0]  # the blocker
    assert 2.0 in runtime.seen[1]  # the quiet tenant is in the very next batch, not after ten of the flood
    assert len(runtime.seen) == 1 + 11  # 41 rows after the blocker, in batches of at most 4


async def test_a_queue_holding_more_work_than_the_wait_limit_refuses_at_once() -> None:
    ticks = iter(range(0, 10**12, 10_000_000))  # every reading 10 ms later: executions take time
    runtime = Doubler()
    executor = ModelExecutor(
        runtime, "m/1", max_queue_size=100, clock=lambda: next(ticks), max_queue_wait_ns=50_000_000
    )
    await executor.run({"x": np.array([1.0])}, ["y"])
    assert executor.ns_per_row > 0  # measured from the execution
    executor.ns_per_row = 20e6  # 20 ms a row, one instance, no batching
    runtime.gate.clear()
    held = [asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"])) for _ in range(2)]
    await until(lambda: executor.pending == 2, "two jobs queued")
    third = asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"]))  # 2 rows x 20 ms <= 50 ms
    await until(lambda: executor.pending == 3, "the third job admitted")
    with pytest.raises(Overloaded, match=r"about 60 ms of work is queued \(the limit is 50 ms\)") as refused:
        await executor.run({"x": np.array([1.0])}, ["y"])  # 3 rows x 20 ms
    assert refused.value.retry_after_s == 1
    urgent = asyncio.create_task(executor.run({"x": np.array([5.0])}, ["y"], priority=1))
    await until(lambda: any(t.done() for t in (*held, third)), "the urgent job queued, shedding one")
    runtime.gate.set()
    assert (await urgent).future.result()[0].tolist() == [10.0]  # admitted by shedding a queued one
    results = await asyncio.gather(*held, third, return_exceptions=True)
    assert sum(isinstance(r, Overloaded) for r in results) == 1
    await executor.close()


class Held(Doubler):
    """Holds inputs whose first value is -1 on the gate; records the rows of every execution."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.clear()
        self.held = threading.Event()  # a held call has begun
        self.rows: list[int] = []

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        if inputs["x"][0] == -1:
            self.held.set()
            self.gate.wait(5)
        self.rows.append(len(inputs["x"]))
        return [inputs["x"] * 2]


async def test_a_lone_request_does_not_wait_out_the_batching_delay() -> None:
    executor = ModelExecutor(Held(), "m/1", 8, Batching(max_rows=8, max_queue_delay_ns=5_000_000_000))
    job = await asyncio.wait_for(executor.run({"x": np.array([1.0])}, ["y"]), 2.0)  # not 5 s
    assert job.future.result()[0].tolist() == [2.0]
    await executor.close()


async def test_the_batching_delay_waits_for_company_while_others_are_in_flight() -> None:
    runtime = Held()
    executor = ModelExecutor(
        runtime, "m/1", 8, Batching(max_rows=8, max_queue_delay_ns=500_000_000), instances=2
    )
    long = asyncio.create_task(executor.run({"x": np.array([-1.0])}, ["y"]))  # holds one instance
    await entered(runtime.held, "the long one holds an instance")
    first = asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"]))  # the other instance waits
    await until(lambda: executor.pending == 2, "the first one queued")
    await until(executor._queue.empty, "the other instance took the first one (and waits for company)")
    second = asyncio.create_task(executor.run({"x": np.array([2.0])}, ["y"]))
    assert [(await j).future.result()[0].tolist() for j in (first, second)] == [[2.0], [4.0]]
    assert 2 in runtime.rows  # the two ran as one batch
    runtime.gate.set()
    await long
    await executor.close()


class Timed:
    """A runtime whose call takes `ms_per_row` per row (sleeping, as a native runtime releases the
    GIL) and records (rows, thread) of every call.

    `clock` is for its executor: it moves on by exactly the time each call takes (and by a
    microsecond at each reading), so that what the executor measures, and decides by, does not
    depend on how busy the machine is."""

    inputs = Doubler.inputs
    outputs = Doubler.outputs
    may_run_inline = True

    def __init__(self, ms_per_row: float = 0.0, ms_per_call: float = 0.0) -> None:
        self.ms_per_row = ms_per_row
        self.ms_per_call = ms_per_call
        self._now = 0
        self._now_lock = threading.Lock()  # read on the loop and on the executor thread
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a call has begun
        self.calls: list[tuple[int, str]] = []

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.entered.set()
        self.gate.wait(5)
        x = inputs["x"]
        self.calls.append((len(x), threading.current_thread().name))
        if x.size == 0:
            raise BadRequest("empty")  # refused at once, as a runtime refuses a bad input
        if self.ms_per_row or self.ms_per_call:
            work_ns = int((self.ms_per_call + self.ms_per_row * len(x)) * 1e6)
            threading.Event().wait(work_ns / 1e9)
            with self._now_lock:
                self._now += work_ns
        return [x * 2]

    def clock(self) -> int:
        with self._now_lock:
            self._now += 1_000
            return self._now

    def unload(self) -> None:
        pass


LOOP = threading.current_thread().name  # pytest-asyncio runs the loop on the main thread
THREAD = "model:m/1#0"


def one(value: float) -> dict[str, np.ndarray]:
    return {"x": np.array([value])}


async def test_a_cheap_model_runs_on_the_event_loop_once_measured() -> None:
    runtime = Timed()
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=50_000_000, clock=runtime.clock)
    first = await executor.run(one(1.0), ["y"])
    second = await executor.run(one(2.0), ["y"])
    assert [first.future.result()[0].tolist(), second.future.result()[0].tolist()] == [[2.0], [4.0]]
    assert [thread for _, thread in runtime.calls] == [
        THREAD,
        LOOP,
    ]  # the first run is measured on the thread
    assert second.enqueued_ns <= second.started_ns <= second.finished_ns
    assert executor.pending == 0
    await executor.close()


async def test_inline_is_off_by_default_and_with_several_instances_or_a_batching_delay() -> None:
    for kwargs in (
        {},
        {"inline_ns": 50_000_000, "instances": 2},
        {"inline_ns": 50_000_000, "batching": Batching(max_rows=8, max_queue_delay_ns=1_000_000)},
    ):
        runtime = Timed()
        executor = ModelExecutor(runtime, "m/1", 8, **kwargs, clock=runtime.clock)  # type: ignore[arg-type]
        for i in range(3):
            await executor.run(one(float(i)), ["y"])
        assert all(thread != LOOP for _, thread in runtime.calls), kwargs
        await executor.close()


async def test_only_a_runtime_that_allows_it_runs_inline() -> None:
    runtime = Doubler()  # may_run_inline False: user code that may block or wait
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=50_000_000)
    for i in range(3):
        await executor.run(one(float(i)), ["y"])
    assert runtime.threads == {THREAD}
    await executor.close()


async def test_rows_larger_than_the_measured_ones_run_on_the_thread_first() -> None:
    runtime = Timed()
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=50_000_000, clock=runtime.clock)
    await executor.run(one(0.0), ["y"])  # measured: one element a row
    wide = {"x": np.ones((1, 64))}  # a longer sequence: its cost per row is unknown
    for _ in range(2):
        assert (await executor.run(wide, ["y"])).future.result()[0].sum() == 128
    await executor.run(one(1.0), ["y"])  # smaller than measured: fine
    assert [thread for _, thread in runtime.calls] == [THREAD, THREAD, LOOP, LOOP]
    await executor.close()


async def test_a_model_slower_than_the_bound_stays_on_its_thread() -> None:
    runtime = Timed(ms_per_row=3)
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=1_000_000, clock=runtime.clock)
    for i in range(4):
        await executor.run(one(float(i)), ["y"])
    assert [thread for _, thread in runtime.calls] == [THREAD] * 4


async def test_a_model_whose_call_alone_passes_the_bound_stays_on_its_thread() -> None:
    runtime = Timed(ms_per_call=4)
    executor = ModelExecutor(
        runtime, "m/1", 8, Batching(max_rows=64), inline_ns=1_000_000, clock=runtime.clock
    )
    await executor.run({"x": np.zeros(32)}, ["y"], rows=32)  # 4 ms for 32 rows: an eighth of a ms a row
    for i in range(3):
        await executor.run(one(float(i)), ["y"])  # a row "costs" well under 1 ms, a call does not
    assert [thread for _, thread in runtime.calls] == [THREAD] * 4
    await executor.close()


async def test_requests_refused_at_once_do_not_make_a_slow_model_look_cheap() -> None:
    runtime = Timed(ms_per_call=4)
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=1_000_000, clock=runtime.clock)
    await executor.run(one(0.0), ["y"])
    for _ in range(12):  # each fails in microseconds
        with pytest.raises(BadRequest):
            await executor.run({"x": np.array([])}, ["y"])
    await executor.run(one(1.0), ["y"])
    assert {thread for _, thread in runtime.calls} == {THREAD}  # 4 ms a run: never on the loop
    await executor.close()


async def test_unbatched_jobs_of_one_turn_each_pay_a_run() -> None:
    runtime = Timed(ms_per_call=4)  # 4 ms a call, whatever its rows
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=10_000_000, clock=runtime.clock)
    await executor.run({"x": np.zeros(8)}, ["y"], rows=8)  # half a ms a row
    await asyncio.gather(*(executor.run(one(float(i)), ["y"]) for i in range(5)))  # 5 runs: 20 ms
    assert [thread for _, thread in runtime.calls] == [THREAD] * 6
    await executor.close()


async def test_batched_jobs_that_cannot_share_a_run_each_pay_one() -> None:
    runtime = Timed(ms_per_call=4)
    executor = ModelExecutor(
        runtime, "m/1", 8, Batching(max_rows=16), inline_ns=10_000_000, clock=runtime.clock
    )
    await executor.run({"x": np.zeros(8)}, ["y"], rows=8)  # half a ms a row, 4 ms a run
    await asyncio.gather(*(executor.run(one(float(i)), ["y"]) for i in range(5)))  # one run
    assert runtime.calls[1:] == [(5, LOOP)]
    dtypes = (np.float64, np.float32, np.int64)  # three keys: three runs, 12 ms
    await asyncio.gather(*(executor.run({"x": np.ones(1, dtype)}, ["y"]) for dtype in dtypes))
    assert {thread for _, thread in runtime.calls[2:]} == {THREAD}
    await executor.close()


async def test_the_jobs_of_one_loop_turn_run_inline_as_one_batch() -> None:
    runtime = Timed()
    executor = ModelExecutor(
        runtime, "m/1", 8, Batching(max_rows=8), inline_ns=50_000_000, clock=runtime.clock
    )
    await executor.run(one(0.0), ["y"])
    jobs = await asyncio.gather(*(executor.run(one(float(i)), ["y"]) for i in range(4)))
    assert [j.future.result()[0].tolist() for j in jobs] == [[0.0], [2.0], [4.0], [6.0]]
    assert runtime.calls[1:] == [(4, LOOP)]
    assert all(j.batch_rows == 4 for j in jobs)
    await executor.close()


async def test_a_turn_that_would_pass_the_bound_goes_to_the_thread_whole() -> None:
    runtime = Timed(ms_per_row=5)  # a run of 1 row fits a 12 ms bound, 3 rows do not
    executor = ModelExecutor(
        runtime, "m/1", 8, Batching(max_rows=8), inline_ns=12_000_000, clock=runtime.clock
    )
    await executor.run(one(0.0), ["y"])
    jobs = await asyncio.gather(*(executor.run(one(float(i)), ["y"]) for i in range(3)))
    assert [j.future.result()[0].tolist() for j in jobs] == [[0.0], [2.0], [4.0]]
    later = runtime.calls[1:]
    assert sum(rows for rows, _ in later) == 3 and {thread for _, thread in later} == {THREAD}
    single = await executor.run(one(5.0), ["y"])  # alone it fits again
    assert single.future.result()[0].tolist() == [10.0]
    assert runtime.calls[-1] == (1, LOOP), (runtime.calls, executor.ns_per_row, executor._ns_per_run)
    await executor.close()


async def test_nothing_runs_inline_while_the_thread_is_busy() -> None:
    runtime = Timed(ms_per_row=5)
    executor = ModelExecutor(
        runtime, "m/1", 8, Batching(max_rows=8), inline_ns=12_000_000, clock=runtime.clock
    )
    await executor.run(one(0.0), ["y"])
    runtime.gate.clear()
    runtime.entered.clear()
    held = [asyncio.create_task(executor.run(one(float(i)), ["y"])) for i in range(3)]  # past the bound
    await entered(runtime.entered, "the three run on the thread, which waits on the gate")
    lone = asyncio.create_task(executor.run(one(5.0), ["y"]))  # cheap enough, but the thread is busy
    await until(lambda: executor.pending == 4, "the lone one queued while the thread is busy")
    runtime.gate.set()
    await asyncio.gather(*held)
    assert (await lone).future.result()[0].tolist() == [10.0]
    assert {thread for _, thread in runtime.calls} == {THREAD}
    await executor.close()


async def test_jobs_of_one_inline_turn_fail_alone() -> None:
    runtime = Timed()
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=50_000_000, clock=runtime.clock)
    await executor.run(one(0.0), ["y"])
    bad, good = await asyncio.gather(
        executor.run({"x": np.array([])}, ["y"]), executor.run(one(4.0), ["y"]), return_exceptions=True
    )
    assert isinstance(bad, BadRequest)
    assert good.future.result()[0].tolist() == [8.0]  # type: ignore[union-attr]
    assert [thread for _, thread in runtime.calls[1:]] == [LOOP, LOOP]
    assert executor.pending == 0
    await executor.close()


async def test_close_runs_the_turn_it_finds_scheduled() -> None:
    runtime = Timed()
    executor = ModelExecutor(runtime, "m/1", 8, inline_ns=50_000_000, clock=runtime.clock)
    await executor.run(one(0.0), ["y"])
    task = asyncio.create_task(executor.run(one(3.0), ["y"]))
    # the job is in; its inline run is scheduled for the end of the turn that queued it, not run
    await until(lambda: executor.pending == 1, "the job queued")
    assert len(runtime.calls) == 1
    await executor.close()
    assert len(runtime.calls) == 2
    assert (await task).future.result()[0].tolist() == [6.0]


async def test_a_long_timeout_gets_its_timer_from_the_sweep_and_still_expires_on_time() -> None:
    runtime = Gated()
    executor = ModelExecutor(runtime, "m/1", 8)
    executor.timer_after_s = 0.02  # the timer of a request with a longer timeout comes from the sweep
    first = asyncio.create_task(executor.run({"x": np.array([1.0])}, ["y"]))
    await entered(runtime.entered, "the first one is running (blocked on the gate)")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(DeadlineExceeded, match="model 'm/1': request timed out after 0.2 s while queued"):
        await executor.run({"x": np.array([2.0])}, ["y"], timeout_s=0.2)
    assert loop.time() - began >= 0.2  # at its deadline, not at the sweep
    runtime.gate.set()
    await first
    await executor.close()
    assert runtime.seen == [[1.0]]  # the expired one never ran


async def test_a_request_answered_before_the_sweep_never_gets_a_timer() -> None:
    executor = ModelExecutor(Doubler(), "m/1", 8)
    job = await executor.run({"x": np.array([1.0])}, ["y"], timeout_s=60.0)
    assert job.timer is None and job.future.result()[0].tolist() == [2.0]
    await executor.close()
