"""MoE-GS training on a Ray cluster: one task per expert, in parallel, then the router.

``train_run_on_ray`` prepares the run folder once (``backend.moe.train.prepare_run``: run.json + the initial
cloud), then starts ``train_expert_task`` for every expert, each asking for a GPU when the cluster has GPUs (else
one CPU). Each task calls ``backend.moe.train.train_expert``, which checkpoints every ``checkpoint_every`` steps
and resumes from ``<run>/<expert>/checkpoint.pt``; Ray re-runs a task whose worker died up to
``EXPERT_RETRIES`` times, so a killed worker costs at most the steps since its last checkpoint. With two or more
experts and ``router`` given, the router (``backend.moe.train_router.train_router``, resumable too) trains in one
more task once every expert is done.

Progress of the whole run: the experts' mean fraction over [0, e), then the router's over [e, 1], with
e = iterations / (iterations + router iterations) (steps of the two stages, taken as equally costly).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import ray

from ..errors import InvalidInput
from ..io.checkpoint import load_checkpoint_file
from ..moe.train import Progress, TrainConfig, load_run_video, prepare_run, train_expert
from ..moe.train_router import RouterTrainConfig, train_router
from .board import JobBoard, TaskChannel, TaskReport, connect
from .tasks import cluster_has_gpus, get

EXPERT_RETRIES = 3
WAIT_S = 0.2


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint (expert or mixture) was written at; 0 when there is none."""
    if not path.is_file():
        return 0
    return int(load_checkpoint_file(path)["step"])


@ray.remote(max_retries=EXPERT_RETRIES)
def train_expert_task(run: str, name: str, config: dict, options: dict | None, board, scope: str) -> str:
    """Train (or resume) the expert ``name`` of the run folder ``run``; returns its checkpoint path."""
    run_dir = Path(run)
    cfg = TrainConfig.from_dict(config)
    start = checkpoint_step(run_dir / name / "checkpoint.pt")
    with TaskChannel(board, scope, f"expert:{name}", from_step=start, steps=cfg.iterations) as channel:
        channel.progress(start / cfg.iterations, f"{name}: resuming at step {start}" if start else f"{name}: "
                                                                                                  "starting")
        video = load_run_video(run_dir)
        z = np.load(run_dir / "points.npz")
        return str(train_expert(video, name, run_dir / name, z["points"], z["colors"], cfg, options,
                                channel.progress, channel.cancel))


@ray.remote(max_retries=EXPERT_RETRIES)
def train_router_task(run: str, config: dict, board, scope: str) -> str:
    """Train (or resume) the router over the run's trained experts; returns the mixture checkpoint path."""
    run_dir = Path(run)
    cfg = RouterTrainConfig.from_dict(config)
    start = checkpoint_step(run_dir / "mixture" / "mixture.pt")
    with TaskChannel(board, scope, "router", from_step=start, steps=cfg.iterations) as channel:
        return str(train_router(run_dir, load_run_video(run_dir), cfg, progress=channel.progress,
                                cancel=channel.cancel))


def _resources(device: str) -> dict:
    """One GPU per training task when the cluster has GPUs and the device allows CUDA, else one CPU."""
    if device != "cpu" and cluster_has_gpus():
        return {"num_gpus": 1.0, "num_cpus": 1.0}
    return {"num_cpus": 1.0}


def wait_for(refs: dict[str, ray.ObjectRef], board, scope: str, on_reports, cancel: threading.Event | None) -> dict:
    """Wait for every task of ``refs`` (key -> ref), calling ``on_reports(reports)`` with the board's reports of
    ``scope`` after each poll. ``cancel`` set: the board's flag for ``scope`` is raised, so every task checkpoints
    and stops. A task that fails stops the others the same way (their checkpoints are kept), then its error is
    raised (``JobCancelled`` for cancelled ones). Returns key -> result."""
    pending = list(refs.values())
    failure: BaseException | None = None
    flagged = False
    while pending:
        if not flagged and (failure is not None or (cancel is not None and cancel.is_set())):
            board.cancel.remote(scope)
            flagged = True
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
        for ref in ready:
            try:
                get(ref)
            except Exception as exc:  # noqa: BLE001 (kept and raised once the other tasks have stopped)
                failure = failure or exc
        if not flagged:
            on_reports(ray.get(board.reports.remote([scope]))[scope])
    if failure is not None:
        raise failure
    return {key: get(ref) for key, ref in refs.items()}


def train_run_on_ray(dataset: str | Path, out: str | Path, experts: list[str], config: TrainConfig | None = None,
                     options: dict[str, dict] | None = None, router: RouterTrainConfig | None = None,
                     progress: Progress | None = None, cancel: threading.Event | None = None,
                     board=None, scope: str | None = None) -> Path:
    """``backend.moe.train.train_run`` on the connected Ray cluster: the experts of ``experts`` in parallel (one
    task each), then, with ``router`` and two or more experts, the router. Returns the run folder.

    ``board``/``scope``: the ``JobBoard`` and scope to report under (a job's); default a new board and scope.
    ``out`` and ``dataset`` must be on storage every worker reaches at the same path.
    """
    config = config or TrainConfig()
    if not experts:
        raise InvalidInput("name at least one expert to train")
    if len(set(experts)) != len(experts):
        raise InvalidInput(f"experts {experts} name one expert twice; each trains in its own task and folder")
    options = options or {}
    run, _ = prepare_run(dataset, out, experts, config, options)
    board = board if board is not None else JobBoard.remote()
    scope = scope or f"moe-{uuid.uuid4().hex[:12]}"
    with_router = router is not None and router.iterations > 0 and len(experts) >= 2
    share = config.iterations / (config.iterations + router.iterations) if with_router else 1.0
    res = _resources(config.device)

    last: list[tuple[float, str]] = []

    def report(lo: float, hi: float, keys: list[str]):
        def on_reports(reports: dict[str, TaskReport]) -> None:
            seen = [reports[k] for k in keys if k in reports]
            now = (lo + (hi - lo) * sum(r.fraction for r in seen) / len(keys),
                   " | ".join(r.message for r in seen if r.message) or "waiting for a worker")
            if progress is not None and last[-1:] != [now]:  # only what changed
                last[:] = [now]
                progress(*now)
        return on_reports

    keys = [f"expert:{name}" for name in experts]
    refs = {key: train_expert_task.options(**res).remote(str(run), name, asdict(config), options.get(name), board,
                                                        scope)
            for key, name in zip(keys, experts)}
    wait_for(refs, board, scope, report(0.0, share, keys), cancel)
    if with_router:
        rcfg = asdict(router)
        ref = train_router_task.options(**_resources(router.device)).remote(str(run), rcfg, board, scope)
        wait_for({"router": ref}, board, scope, report(share, 1.0, ["router"]), cancel)
    if progress is not None:
        progress(1.0, f"trained {', '.join(experts)}" + (" and the router" if with_router else ""))
    return run


def moe_train_plan(ctx, params, board) -> list[str]:
    """The ``moe_train`` job on the cluster: as ``backend.moe.jobs.moe_train`` (same parameters, same run folder
    and artifacts) with the experts trained in parallel."""
    out = ctx.resolve(params.out) if params.out else ctx.job_dir / "run"
    cfg = TrainConfig(iterations=params.iterations, downsample=params.downsample, router_views=params.router_views)
    ctx.progress(0.0, "loading the dataset")
    run = train_run_on_ray(ctx.resolve(params.dataset), out, params.experts, cfg, params.options,
                           progress=ctx.on_progress, cancel=ctx.cancel_event, board=board, scope=ctx.job_id)
    return ctx.artifacts([run / "run.json"] + [run / e / "checkpoint.pt" for e in params.experts])


def train_run_with_ray(address: str, dataset: str | Path, out: str | Path, experts: list[str], config: TrainConfig,
                       router_iterations: int = 0, progress: Progress | None = None) -> Path:
    """``lw moe train --ray ADDRESS``: join the cluster (``board.connect``), train the experts in parallel and
    then, for ``router_iterations`` > 0 and two or more experts, the router; Ray is shut down afterwards when
    this call started it."""
    owns = connect(address)
    try:
        router = RouterTrainConfig(iterations=router_iterations, device=config.device,
                                   torch_threads=config.torch_threads) if router_iterations else None
        return train_run_on_ray(dataset, out, experts, config, router=router, progress=progress)
    finally:
        if owns:
            ray.shutdown()
