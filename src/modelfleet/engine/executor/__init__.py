"""Runs models' inferences off the event loop: one ModelExecutor per loaded model (queue, admission,
batching, threads), optionally sharing the machine's cores fairly through a ComputeShare."""

from modelfleet.engine.executor.jobs import DEFAULT_PRIORITY, Arrays, Batching, Executor, Job, Outcome, Post
from modelfleet.engine.executor.model import FLUSH_NS, ModelExecutor
from modelfleet.engine.executor.share import ComputeShare

__all__ = [
    "DEFAULT_PRIORITY",
    "FLUSH_NS",
    "Arrays",
    "Batching",
    "ComputeShare",
    "Executor",
    "Job",
    "ModelExecutor",
    "Outcome",
    "Post",
]
