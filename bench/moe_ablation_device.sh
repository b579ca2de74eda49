#!/bin/bash
# MoE-GS III on the device in two back-to-back calls (docs/bench/moe_mixture.md, "MoE-GS III"):
#
#   CARRY=.cluster_carry_25 bash bench/moe_ablation_device.sh experts    # call 1: every expert of every scene
#   CARRY=.cluster_carry_25 bash bench/moe_ablation_device.sh stage2     # call 2: finish them, then stage 2
#   CARRY=... STEPS=2500 EXPERT_S=150 bash bench/moe_ablation_device.sh all   # one call: short experts, stage 2
#
# CARRY holds one folder per scene packed by bench/cluster_pack.py --no-site --jpeg 95 (SCENE/scene/ and
# SCENE/scene_points.npz) and the wheels the device lacks (gsplat-1.5.3, plyfile, packaging). Runs live in
# /tmp/run25_SCENE, which the warm machine keeps between the two calls (it goes back 30 s after a call).
#
# experts: all experts of all scenes at once, one process each (bench/moe_mixture_results.py --experts-only), each
#   stopped at the call's budget; they checkpoint every 500 steps and the next call resumes them.
# stage2:  the experts resumed to STEPS (at most RESUME_S seconds), then per scene at once: bench/moe_oracle.py and
#   bench/moe_ablation.py (router kinds x SEEDS, pruning and distillation next to the paper's, the baked cloud),
#   which skips what would start after its deadline; then, alone on the GPU, bench/moe_fps.py at 1352x1014.
# $OUT gets at most 8 files: log.txt (+ call 2: ablation_SCENE.json and the first scene's picture, fps.json).
#
# Environment (defaults): SCENES (every folder of CARRY with a scene/) EXPERTS="trajectory keyframe embedding"
# STEPS=12000 SEEDS="0 1" ROUTER_STEPS=2000 DISTILL_STEPS=500 BUDGET=555 (seconds of this call) RESUME_S=180 FPS_S=75
# DEVICE=cuda THREADS=2 FPS_SIZE=1352x1014 PRUNE_FT=200 KINDS="volume volume_pixel pixel" PARTS="pruning distillation
# bake" (bench/moe_ablation.py --kinds / --parts) EXPERT_S=150 (phase all: the experts' seconds) PRUNE_JOINT=1 (also
# the experts fine-tuned after the cut: --prune-joint).
# A CPU dry run (the dev box): PY=.venv/bin/python DEVICE=cpu STEPS=30 ROUTER_STEPS=4 DISTILL_STEPS=3 FPS_SIZE=192x144
# PRUNE_FT=2 with a carry of the tiny preset.
set -u
PY=${PY:-python3}  # the dev box's dry run: PY=.venv/bin/python
phase=${1:?experts, stage2 or all}
case $phase in experts|stage2|all) ;; *) echo "phase must be experts, stage2 or all, got $phase" >&2; exit 2;; esac
C=$PWD/${CARRY:-.cluster_carry_25}
SCENES=${SCENES:-$(for d in "$C"/*/scene; do [ -d "$d" ] && basename "$(dirname "$d")"; done | tr '\n' ' ')}
EXPERTS=${EXPERTS:-trajectory keyframe embedding}; STEPS=${STEPS:-12000}
SEEDS=${SEEDS:-0 1}; ROUTER_STEPS=${ROUTER_STEPS:-2000}; DISTILL_STEPS=${DISTILL_STEPS:-500}
BUDGET=${BUDGET:-555}; RESUME_S=${RESUME_S:-180}; FPS_S=${FPS_S:-75}; DEVICE=${DEVICE:-cuda}; THREADS=${THREADS:-2}
FPS_SIZE=${FPS_SIZE:-1352x1014}; PRUNE_FT=${PRUNE_FT:-200}; KINDS=${KINDS:-volume volume_pixel pixel}
PARTS=${PARTS:-pruning distillation bake}; EXPERT_S=${EXPERT_S:-150}
JOINT=""; [ "${PRUNE_JOINT:-1}" = 1 ] && JOINT=--prune-joint
t0=$(date +%s); end=$((t0 + BUDGET))
log=$OUT/log.txt
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$log"; }
if ls "$C"/*.whl > /dev/null 2>&1; then
  mkdir -p /tmp/site && $PY -m pip install -q --no-index --no-deps --target /tmp/site "$C"/*.whl 2>&1 | tail -2
fi
export PYTHONPATH=/tmp/site:$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 TORCH_EXTENSIONS_DIR=/tmp/ext
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$log"
  $PY -c "from gsplat.cuda._backend import _C; print('gsplat ok')" 2>&1 | tail -1 | tee -a "$log"  # build once
fi
say "phase $phase: scenes $SCENES, experts $EXPERTS to $STEPS steps"

experts() {  # every expert of every scene in its own process until $1 (epoch seconds); checkpoints stay
  local until=$1 pids=()
  for s in $SCENES; do
    mkdir -p "/tmp/run25_$s"
    [ -f "/tmp/run25_$s/points.npz" ] || cp "$C/$s/scene_points.npz" "/tmp/run25_$s/points.npz"
    for e in $EXPERTS; do
      timeout $((until - $(date +%s))) $PY bench/moe_mixture_results.py --dataset "$C/$s/scene" \
        --run "/tmp/run25_$s" --downsample 1 --device "$DEVICE" --threads "$THREADS" --expert-iterations "$STEPS" \
        --opacity-reset-every 3000 --seed 0 --experts "$e" --experts-only >> "/tmp/run25_$s/log_$e.txt" 2>&1 &
      pids+=($!)
    done
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for s in $SCENES; do for e in $EXPERTS; do  # how far each got (the last progress line or its error)
    echo "  $s $e: $(tail -c 400 "/tmp/run25_$s/log_$e.txt" | tr '\r' '\n' | grep -v '^$' | tail -n 1)" | tee -a "$log"
  done; done
}

if [ "$phase" = experts ]; then
  experts $((end - 10))
  say "experts stopped for the call's budget (or done)"
  exit 0
fi

if [ "$phase" = all ]; then RESUME_S=$EXPERT_S; fi
experts $(( $(date +%s) + RESUME_S < end ? $(date +%s) + RESUME_S : end ))
say "experts resumed"
pids=()
first=${SCENES%% *}
for s in $SCENES; do
  pic=""; [ "$s" = "$first" ] && pic=$OUT/moe_ablation_$s.jpg
  ( $PY bench/moe_oracle.py --run "/tmp/run25_$s" --device "$DEVICE" --blocks 8 32 > "/tmp/run25_$s/oracle.txt" 2>&1
    $PY bench/moe_ablation.py --run "/tmp/run25_$s" --device "$DEVICE" --threads "$THREADS" \
      --iterations "$ROUTER_STEPS" --seeds $SEEDS --distill-iterations "$DISTILL_STEPS" --deadline $((end - FPS_S)) \
      --prune-finetune "$PRUNE_FT" $JOINT --kinds $KINDS --parts $PARTS \
      --out "$OUT/ablation_$s.json" --picture "$pic" > "/tmp/run25_$s/ablation.txt" 2>&1 ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
say "stage 2 done"
for s in $SCENES; do
  { echo "== $s"; cat "/tmp/run25_$s/oracle.txt"; grep -v "^  " "/tmp/run25_$s/ablation.txt"; } >> "$log"
done
for s in $SCENES; do  # alone on the GPU: render speed at N3V's resolution
  left=$((end - $(date +%s)))
  [ "$left" -gt 15 ] || { say "no time left for the FPS of $s"; break; }
  pruned=(); [ -f "/tmp/run25_$s/ablation/pruned.pt" ] && pruned=(--pruned "/tmp/run25_$s/ablation/pruned.pt")
  mixtures=(); for k in $KINDS; do  # every router kind of the first seed, the default first
    [ -f "/tmp/run25_$s/ablation/${k}_s${SEEDS%% *}/mixture.pt" ] && mixtures+=("/tmp/run25_$s/ablation/${k}_s${SEEDS%% *}/mixture.pt")
  done
  [ ${#mixtures[@]} -gt 0 ] || { say "no mixture of $s to time"; continue; }
  timeout "$left" $PY bench/moe_fps.py --run "/tmp/run25_$s" --device "$DEVICE" --size "$FPS_SIZE" \
    --mixture "${mixtures[@]}" "${pruned[@]}" \
    --out "/tmp/run25_$s/fps.json" >> "$log" 2>&1
done
$PY -c "import json, sys; print(json.dumps({a: json.load(open(a)) for a in sys.argv[1:]}, indent=1))" \
  /tmp/run25_*/fps.json > "$OUT/fps.json" 2>/dev/null
say "done"
