"""The LivingWorld pipelines: a world from one image, its expansion, motion, bake and loop metrics.

numpy's BLAS runs on one thread in any process that imports them. OpenBLAS's workers busy-wait for a while after
each multi-threaded call, on the cores torch then needs. The world's numpy linear algebra is small (the motion
alignment's RANSAC products and fits, the depth fit on a subsample) and its heavy work runs in torch: on the 2-core
box a motion field update right after an alignment took 0.19-0.25 s with numpy's default threads and 0.08-0.15 s
with one (``bench/motion_update_overhead_gpu.py --dry``, docs/bench/motion.md). ``threadpoolctl`` sets it at run
time (numpy's BLAS must be loaded first); torch's own threads are untouched.
"""

import numpy as _numpy  # noqa: F401  (loads the BLAS that the limit below applies to)
from threadpoolctl import threadpool_limits as _threadpool_limits

_threadpool_limits(limits=1, user_api="blas")
