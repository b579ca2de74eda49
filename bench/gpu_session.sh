#!/usr/bin/env bash
# Every GPU figure of issue 22 in ONE device call (< 9 min on an H100): BEFORE on a copy of the code at the
# baseline commit (.baseline/, LW_CODE) and AFTER on this tree, the same bench scripts for both, then tests/gpu
# and the outpaint acceleration modes. Logs, a JSON of the figures and the outpaint comparison image go to $OUT.
#
#   here, once:      bash bench/gpu_session_prep.sh [BASELINE_COMMIT]   (.whl/ wheels, .baseline/ code)
#   on the device:   bash bench/gpu_session.sh                            (carry .whl and .baseline)
#   CPU check here:  LW_GPU_DRY=1 LW_PYTHON=.venv/bin/python bash bench/gpu_session.sh
#
# Each step runs under a time limit cut to what is left of LW_GPU_BUDGET_S (default 515 s after the wheels are
# installed) and is skipped when too little is left; the most important steps come first. LW_GPU_STEPS (a comma
# list of step names) runs only those: every step no longer fits one 10-minute call, since each world step waits for
# the UNet's background compile (~2 min from a cold cache), so a call names the steps it has time for
# (docs/bench/world.md, seventh session). $OUT gets
# session.log, figures.json, summary.md, logs.tgz (every step's log and JSON), outpaint.png (eager | graphs |
# 8 x difference) and outpaint_inductor.png.
set -u -o pipefail
T0=$(date +%s)
DRY=${LW_GPU_DRY:-0}
BUDGET=${LW_GPU_BUDGET_S:-515}
OUT=${OUT:-/tmp/lw-gpu-out}
WORK=${LW_GPU_WORK:-/tmp/lw-gpu}
PY=${LW_PYTHON:-python3}
MODELS=${LW_GPU_MODELS:-/tmp/lw-full-models}
mkdir -p "$OUT" "$WORK/logs"
export PYTHONUNBUFFERED=1

now() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(now)s] $*" | tee -a "$OUT/session.log"; }
pack() {
  tar czf "$OUT/logs.tgz" -C "$WORK" logs 2>/dev/null
  $PY bench/gpu_figures.py "$WORK/logs" --json "$OUT/figures.json" > "$OUT/summary.md" 2>>"$OUT/session.log"
}
# step NAME LIMIT_S NEED_S CMD...: run CMD with its output in logs/NAME.log, under min(LIMIT, time left - 10) s;
# skipped when less than NEED_S seconds are left.
step() {
  local name=$1 limit=$2 need=$3
  shift 3
  if [[ -n "${LW_GPU_STEPS:-}" && ",$LW_GPU_STEPS," != *",$name,"* ]]; then
    return 0  # not asked for in this call (LW_GPU_STEPS)
  fi
  local left=$(( BUDGET - $(now) ))
  if (( left < need )); then
    log "SKIP $name: needs ${need} s, ${left} s left"
    return 0
  fi
  (( limit > left - 10 )) && limit=$(( left - 10 ))
  log "START $name (limit ${limit} s)"
  local t=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
  local rc=$?
  log "END $name rc=$rc ($(( $(date +%s) - t )) s)"
  tail -n 12 "$WORK/logs/$name.log" | cut -c1-220
  pack
}
BEFORE=(env LW_CODE=.baseline)  # the bench scripts import backend from .baseline

if [[ $DRY == 1 ]]; then
  DRYARG=--dry
  MODELS=/tmp/lw-dry-models
  log "dry run on the CPU (checks the script; no figures)"
else
  DRYARG=
  log "installing the carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
  export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 TORCH_EXTENSIONS_DIR=$PWD/.gsplat-build
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv \
    > "$WORK/logs/device.txt" 2>&1
  $PY -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)' \
    >> "$WORK/logs/device.txt" 2>&1
  cat "$WORK/logs/device.txt"
fi
[[ -d .baseline/backend ]] || { log "no .baseline/ (run bench/gpu_session_prep.sh)"; exit 1; }
T0=$(date +%s)  # the budget counts from here
log "budget ${BUDGET} s; baseline $(cat .baseline/COMMIT 2>/dev/null || echo '?')"

# Phase 1, while gsplat's kernels build on the CPU (~90 s): the random full-size models and the hash grid.
if [[ $DRY != 1 ]]; then
  ( $PY -c 'import time; t = time.time(); from gsplat.cuda._backend import _C; assert _C is not None; print(f"gsplat built in {time.time() - t:.0f} s")' \
      > "$WORK/logs/gsplat_build.log" 2>&1; echo $? > "$WORK/gsplat_build.rc" ) &
  BUILD=$!
fi
step models 150 60 $PY -c "import sys; sys.path.insert(0, 'bench'); from world_step_gpu import build_models; from pathlib import Path; print(build_models(Path('$MODELS'), '$DRYARG' == '--dry'))"
ITERS=20
[[ $DRY == 1 ]] && ITERS=2
step hashgrid_before 60 30 "${BEFORE[@]}" $PY bench/fields_hashgrid_gpu.py --iters $ITERS --json "$WORK/logs/hashgrid_before.json" $DRYARG
step hashgrid_after 90 40 $PY bench/fields_hashgrid_gpu.py --iters $ITERS --json "$WORK/logs/hashgrid_after.json" $DRYARG
# the hash grid kernel's limiter, if Nsight Compute is on the image (one launch of 1M points; LW_NCU_LAUNCH =
# "block, warps, order", default a level-groups launch)
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -n 1)
if [[ $DRY != 1 && -n "$NCU" ]]; then
  step hashgrid_ncu 90 40 "$NCU" --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    -k regex:_hashgrid_fwd -c 1 $PY -c "import torch; from backend.fields import HashGridConfig; from backend.fields.hashgrid_triton import TritonHashGrid; e = TritonHashGrid(HashGridConfig(backend='triton'), ${LW_NCU_LAUNCH:-128, 4, 3}).cuda(); x = torch.rand(1 << 20, 3, device='cuda') * 2 - 1; e(x); torch.cuda.synchronize()"
else
  log "no Nsight Compute (ncu) here: the hash grid's limiter is not profiled"
fi
if [[ $DRY != 1 ]]; then
  wait "$BUILD"
  log "gsplat build rc=$(cat "$WORK/gsplat_build.rc"): $(tail -n 1 "$WORK/logs/gsplat_build.log")"
fi

# Phase 2: every figure before and after, most important first.
WORLD_ARGS=(--steps 30 --turns 30,-30,45,-45 --models "$MODELS")
[[ $DRY == 1 ]] && WORLD_ARGS=(--steps 2 --turns 30,-30 --models "$MODELS")
step motion_before 75 30 "${BEFORE[@]}" $PY bench/motion_update_gpu.py --no-variants --json "$WORK/logs/motion_update_before.json" $DRYARG
step motion_after 120 30 $PY bench/motion_update_gpu.py --profile --json "$WORK/logs/motion_update_after.json" $DRYARG
# where the update's time goes (new or same field object, alignment before or not, eager warm-up 3 or 1)
step motion_overhead 120 40 $PY bench/motion_update_overhead_gpu.py --json "$WORK/logs/motion_overhead.json" $DRYARG
if [[ $DRY != 1 ]]; then  # the bake needs CUDA
  step bake_before 60 25 "${BEFORE[@]}" $PY bench/motion_bake_gpu.py
  step bake_after 60 25 $PY bench/motion_bake_gpu.py
fi
TEST_ARGS=(--timeout 90)  # pytest-timeout (on the GPU image)
[[ $DRY == 1 ]] && TEST_ARGS=()
step tests_gpu 120 40 $PY -m pytest -q -m gpu tests/gpu tests/backend/fields/test_hashgrid_cuda.py -p no:cacheprovider "${TEST_ARGS[@]}"
step world_before 300 40 "${BEFORE[@]}" $PY bench/world_step_gpu.py "${WORLD_ARGS[@]}" --json "$WORK/logs/world_step_before.json" $DRYARG
# after: the UNet compiles in the background after the first expansion (~2 min, waited for); 4 expansions after it
step world_after 300 40 $PY bench/world_step_gpu.py "${WORLD_ARGS[@]}" --turns 30,-30,45,-45,60,-60 --profile --json "$WORK/logs/world_step_after.json" $DRYARG
OUTPAINT_ARGS=(--steps 30 --reps 4)
[[ $DRY == 1 ]] && OUTPAINT_ARGS=(--steps 2 --reps 1)
GRAPHS=off,graphs,auto  # auto: the default (graphs, then the background compile adopted)
[[ $DRY == 1 ]] && GRAPHS=off
step outpaint_after 200 45 $PY bench/outpaint_gpu.py --modes $GRAPHS "${OUTPAINT_ARGS[@]}" --models "$MODELS" --json "$WORK/logs/outpaint_after.json" --png "$OUT/outpaint.png" $DRYARG
RENDER_ARGS=(--skip-parity --scenes ball,world --sh 0,3 --fracs 1.0 --iters 40)
[[ $DRY == 1 ]] && RENDER_ARGS=(--skip-parity --scenes ball --sh 0 --fracs 1.0 --iters 2)
step render_before 75 30 "${BEFORE[@]}" $PY bench/render_gpu.py "${RENDER_ARGS[@]}" --profile '' --json "$WORK/logs/render_before.json" $DRYARG
step render_after 90 30 $PY bench/render_gpu.py "${RENDER_ARGS[@]}" --profile ball --json "$WORK/logs/render_after.json" $DRYARG
INDUCTOR=off,inductor
[[ $DRY == 1 ]] && INDUCTOR=off
step outpaint_inductor 300 60 $PY bench/outpaint_gpu.py --modes $INDUCTOR "${OUTPAINT_ARGS[@]}" --models "$MODELS" --json "$WORK/logs/outpaint_inductor.json" --png "$OUT/outpaint_inductor.png" $DRYARG

GALLERY_ARGS=(--resolution 384 --frames 60 --device cuda)  # metrics at the world's resolution, as lw world metrics
[[ $DRY == 1 ]] && GALLERY_ARGS=(--resolution 64 --frames 6 --size 48 --device cpu)
step gallery_cuda 160 60 env PYTHONPATH="${PYTHONPATH:-}:$PWD" $PY bench/world_gallery.py "${GALLERY_ARGS[@]}" --image "$OUT/world_gallery_cuda.jpg"

pack
log "done in $(now) s of ${BUDGET}"
cat "$OUT/summary.md"
