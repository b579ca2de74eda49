"""Running jobs on a Ray cluster instead of the backend's local worker thread (``lw serve --ray auto|ADDRESS``).

- ``dispatch``: ``RayWorker``, the server side: every job becomes a Ray task; progress and cancel travel through
  a ``JobBoard`` actor; the SQLite job store stays the one record of every job.
- ``board``: ``JobBoard`` (the actor) and ``TaskChannel`` (its task side: progress reports out, cancel flag in).
- ``tasks``: the ``run_job`` remote function and where each job kind runs (GPU or CPU, retries).
- ``moe``: MoE-GS training with one Ray task per expert, then the router; retried tasks resume from checkpoints.

Nothing here is imported unless Ray is asked for, and Ray is an optional dependency (``pip install
'livingworld-backend[cluster]'``). Every worker must reach the workspace at the same path (shared storage on a
real cluster): job folders, datasets, run folders and checkpoints live there. See docs/SCALING.md.
"""

from ..errors import LWError


class ClusterUnavailable(LWError):
    """Ray is not installed, or the cluster asked for cannot be reached."""


try:
    import ray  # noqa: F401 (every module of this package needs it: fail here, with the install command)
except ModuleNotFoundError as _exc:
    if _exc.name != "ray":
        raise
    raise ClusterUnavailable("running on a Ray cluster needs the `ray` package: "
                             "pip install 'livingworld-backend[cluster]' (or 'ray[default]>=2.9')") from _exc
