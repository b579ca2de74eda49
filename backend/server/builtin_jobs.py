"""Job kinds that exercise the job machinery itself: waiting with progress, and failing on purpose.

``sleep`` is the empty job of the latency benchmark and the job the progress and cancel tests run;
``fail`` is how a test sees a job error travel from the job function to the client.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..errors import InvalidInput
from ..jobs import JobContext, job_kind


class SleepParams(BaseModel):
    seconds: float = Field(1.0, ge=0.0, le=3600.0, description="Total time to wait, in seconds.")
    steps: int = Field(10, ge=1, le=10_000, description="Progress reports over that time (one per step).")


@job_kind("sleep", SleepParams)
def sleep(ctx: JobContext, params: SleepParams) -> list[str]:
    """Wait ``seconds`` in ``steps`` equal steps, reporting progress i/steps after each; writes nothing.
    Cancel takes effect within one step (the wait itself wakes up on cancel)."""
    dt = params.seconds / params.steps
    for i in range(params.steps):
        ctx.cancel_event.wait(dt)
        ctx.progress((i + 1) / params.steps, f"step {i + 1}/{params.steps}")
    return []


class FailParams(BaseModel):
    message: str = Field("this job fails on purpose", max_length=1000,
                         description="Message of the InvalidInput error the job raises.")


@job_kind("fail", FailParams)
def fail(ctx: JobContext, params: FailParams) -> list[str]:
    """Raise ``InvalidInput(message)`` after reporting progress 0: a job error as a user would meet it."""
    ctx.progress(0.0, "about to fail")
    raise InvalidInput(params.message)
