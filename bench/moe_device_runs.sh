#!/bin/bash
# Several bench/moe_mixture_results.py runs side by side on one device GPU, from a folder packed by
# bench/cluster_pack.py --no-site (scene/ + scene_points.npz) with the wheels the device lacks beside it
# (gsplat-1.5.3, plyfile, packaging: `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`).
#
#   CARRY=.cluster_carry16 [VARIANTS="LABEL=ARGS;..."] bash bench/moe_device_runs.sh NAME "ARGS" [NAME "ARGS" ...]
#
# NAME@SUB takes the run's scene from $CARRY/SUB/ instead (two scenes in one carry: pack them with --jpeg 95 to
# stay under a call's 64 MiB).
#
# Each run: RUN=/tmp/run_NAME (points copied in first); its log (the experts' times, then stage 2), picture and
# mixture report under $OUT (three files a run: a call brings back at most 8). Expert checkpoints stay in /tmp
# while the machine is warm (it goes back 30 s after a call), and the script resumes them, so a call cut by the
# time limit can be repeated at once on the same machine. Every GPU figure of docs/bench/moe_mixture.md since
# 2026-12-06 came from it.
set -u
# Cut by `timeout` (a call's 600 s): say how far every expert got, then stop the runs (their checkpoints stay).
names=()
trap 'echo "stopped at $(date +%T):"; for n in "${names[@]}"; do for f in /tmp/run_"$n"/log_*.txt; do
        echo "  $f: $(tail -c 300 "$f" | tr "\r" "\n" | grep -v "^$" | tail -n 1)"; done; done
      trap - TERM; kill 0' TERM
C=$PWD/${CARRY:-.cluster_carry}
mkdir -p /tmp/site && python3 -m pip install -q --no-index --no-deps --target /tmp/site "$C"/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 TORCH_EXTENSIONS_DIR=/tmp/ext
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)  # build gsplat once: runs that JIT-build it at the same time race in one folder
python3 -c "from gsplat.cuda._backend import _C; print('gsplat ok')" 2>&1 | tail -1
echo "gsplat build $(( $(date +%s) - t0 )) s"
# Phase 1: every expert of every run in its own process, all at once (a 320x240 expert keeps an H100 far from busy;
# argparse keeps the last --experts, so the run's own list is overridden). Phase 2: each run's router, pruning and
# distillation (the experts resume from their checkpoints in seconds).
argsof=()
# NAME or NAME@SUB: the run's scene is $C/SUB/scene (+ $C/SUB/scene_points.npz), so one carry can hold two scenes
declare -A scene_of
while [ $# -ge 2 ]; do
  name=${1%%@*}; sub=""; [ "$name" != "$1" ] && sub=${1#*@}/
  names+=("$name"); argsof+=("$2"); scene_of[$name]=$C/$sub; shift 2
done
pids=()
for i in "${!names[@]}"; do
  name=${names[$i]}; args=${argsof[$i]}
  mkdir -p "/tmp/run_$name" && { [ -f "/tmp/run_$name/points.npz" ] || cp "${scene_of[$name]}scene_points.npz" "/tmp/run_$name/points.npz"; }
  # shellcheck disable=SC2086  # ARGS is a list of options
  experts=$(python3 -c 'import sys, shlex; a = shlex.split(sys.argv[1]); i = a.index("--experts") + 1 if "--experts" in a else 0
import itertools; e = list(itertools.takewhile(lambda x: not x.startswith("--"), a[i:])) if i else []
print(" ".join(e or ["deformation", "trajectory", "keyframe"]))' "$args")
  for e in $experts; do
    # shellcheck disable=SC2086
    python3 bench/moe_mixture_results.py --dataset "${scene_of[$name]}scene" --run "/tmp/run_$name" --downsample 1 --device cuda \
      $args --threads 2 --experts "$e" --experts-only > "/tmp/run_$name/log_$e.txt" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; done
echo "experts done $(( $(date +%s) - t0 )) s"
pids=()
for i in "${!names[@]}"; do
  name=${names[$i]}; args=${argsof[$i]}
  tail -qn1 "/tmp/run_$name"/log_*.txt > "$OUT/log_$name.txt"  # each expert's time (or its error)
  # the headroom first (bench/moe_oracle.py: what one expert per region could reach on the held-out view), then stage 2
  # shellcheck disable=SC2086  # ARGS is a list of options
  ( python3 bench/moe_oracle.py --run "/tmp/run_$name" --device cuda >> "$OUT/log_$name.txt" 2>&1
    python3 bench/moe_mixture_results.py --dataset "${scene_of[$name]}scene" --run "/tmp/run_$name" --downsample 1 --device cuda \
      --threads 4 --picture "$OUT/moe_$name.png" $args >> "$OUT/log_$name.txt" 2>&1
    cp "/tmp/run_$name/mixture/report.json" "$OUT/report_$name.json" 2>/dev/null ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "stage 2 done $(( $(date +%s) - t0 )) s"
# Stage-2 variants over the same experts, one after the other (all runs at once): VARIANTS="LABEL=ARGS;LABEL=ARGS",
# e.g. VARIANTS="joint=--joint;joint1000=--joint --router-iterations 1000". Each moves the previous mixture/ aside
# (stage 2 resumes a mixture/ trained with the same options) and appends its table to the run's log.
IFS=';' read -ra variants <<< "${VARIANTS:-}"
for v in "${variants[@]}"; do
  label=${v%%=*}; vargs=${v#*=}; pids=()
  for i in "${!names[@]}"; do
    name=${names[$i]}; args=${argsof[$i]}
    mv "/tmp/run_$name/mixture" "/tmp/run_$name/mixture_$(date +%s%N)" 2>/dev/null
    echo "#### variant $label: $vargs" >> "$OUT/log_$name.txt"
    # shellcheck disable=SC2086  # ARGS are lists of options; the variant's come last and win
    python3 bench/moe_mixture_results.py --dataset "${scene_of[$name]}scene" --run "/tmp/run_$name" --downsample 1 --device cuda \
      --threads 4 --picture= $args $vargs >> "$OUT/log_$name.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "variant $label done $(( $(date +%s) - t0 )) s"
done
for name in "${names[@]}"; do
  echo "== $name"; grep "^| \|^MoE\|^####\|^experts\|Error\|Invalid\|^dataset" "$OUT/log_$name.txt" | grep -v "^|---"
done
