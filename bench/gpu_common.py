"""What the GPU bench scripts share: which code tree they measure, timing, and their JSON output.

``use_code_tree()`` puts ``$LW_CODE`` (a copy of the code at an earlier commit, for before/after figures taken in
one session by ``bench/gpu_session.sh``) or this checkout first on ``sys.path``; call it before importing
``backend``. ``--dry`` runs of the scripts use the CPU and tiny sizes: they check the script, not the speed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_code_tree() -> str:
    code = os.environ.get("LW_CODE") or str(ROOT)
    sys.path.insert(0, str(Path(code).resolve()))
    return code


def median_ms(fn, iters: int, warmup: int = 3, cuda: bool = True) -> float:
    """Median over ``iters`` calls of ``fn(i)`` in ms: CUDA events around each call after ``warmup`` calls, or the
    host clock on the CPU."""
    import torch

    for i in range(warmup):
        fn(i)
    times = []
    for i in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def dump(path: str | os.PathLike | None, result: dict) -> None:
    """Write ``result`` as JSON to ``path`` (if given), with the code tree and the device."""
    if path is None:
        return
    import torch

    result = {"code": os.environ.get("LW_CODE") or "working tree", "device": device_name(),
              "torch": torch.__version__, **result}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str))
