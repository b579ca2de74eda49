"""Jobs as Ray tasks: ``run_job`` runs one job kind in a Ray worker, and ``placement`` says what it asks for.

A job's task builds the same ``JobContext`` the local worker builds, with a ``TaskChannel`` for progress and
cancel, and runs the job kind. Kinds with a cluster plan (``PLANS``: ``moe_train``) run the plan instead, which
spreads the job over more tasks (one per expert) and waits for them; a plan only coordinates, so it asks for no
CPU, and it resumes from checkpoints, so it may be retried.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from pathlib import Path

import ray

from ..errors import InvalidInput, LWError
from ..jobs import JobContext, PathPolicy, registry
from ..jobs import run_job as run_job_kind
from .board import TaskChannel

JOB_KEY = "job"

# Job kinds that do no tensor work: they never wait for a GPU.
CPU_KINDS = frozenset({"sleep", "fail", "import_gaussians", "export_gaussians", "world_undo"})

# Job kinds with a plan for the cluster: "module:function", called as plan(ctx, params, board).
PLANS = {"moe_train": "backend.cluster.moe:moe_train_plan"}

PLAN_RETRIES = 2


@dataclass(frozen=True)
class Placement:
    """Resources a task asks Ray for, and how often Ray re-runs it when its worker process dies."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 0

    def options(self) -> dict:
        return asdict(self)


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0.0) > 0


def placement(kind: str, gpus: bool) -> Placement:
    """Where the job ``kind`` runs on a cluster with (``gpus``) or without GPUs. A job that is not a plan is not
    retried: it may have half-written its outputs, and the user decides whether to run it again."""
    if kind in PLANS:
        return Placement(num_cpus=0.0, max_retries=PLAN_RETRIES)
    if gpus and kind not in CPU_KINDS:
        return Placement(num_cpus=1.0, num_gpus=1.0)
    return Placement(num_cpus=1.0)


def plan_for(kind: str):
    module, name = PLANS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def get(ref):
    """``ray.get(ref)``; an ``LWError`` the task raised (``JobCancelled`` included) is raised as itself, so it
    crosses any number of task boundaries unchanged; other errors stay wrapped, with the remote traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, LWError):
            raise exc.cause from None
        raise


@ray.remote
def run_job(workspace: str, job_id: str, kind: str, params: dict, board, policy: PathPolicy) -> list[str]:
    """Run the job ``job_id`` of ``kind`` (or its cluster plan) in this worker; returns its artifacts.
    ``workspace`` must be the same path on every node (shared storage); ``policy``: the server's path policy."""
    spec = registry().get(kind)
    if spec is None:
        raise InvalidInput(f"job kind {kind!r} is not known to the Ray worker: install the same backend version "
                           f"on every node")
    workspace_path = Path(workspace)
    job_dir = workspace_path / "jobs" / job_id
    with TaskChannel(board, job_id, JOB_KEY) as channel:
        ctx = JobContext(workspace=workspace_path, job_dir=job_dir, job_id=job_id, on_progress=channel.progress,
                         cancel_event=channel.cancel, policy=policy)
        p = spec.params.model_validate(params)
        if kind in PLANS:
            return run_job_kind(plan_for(kind), ctx, p, board)
        return run_job_kind(spec.fn, ctx, p)
