#!/usr/bin/env bash
# Every GPU measurement of issue 19, prepared so that a session with an H100/H200 runs it
# first. Rows go to benchmarks/results.json (and a copy, with the profiles and a summary,
# to $OUT so they come back). Wheels first (benchmarks/gpu_wheels.sh, on the CPU machine).
#
# Device calls, one right after the other (a warm machine keeps /tmp/site between calls):
#   1. carry [".gpu-wheels-1"]: bash benchmarks/gpu_run.sh install .gpu-wheels-1
#   2. carry [".gpu-wheels-2"]: bash benchmarks/gpu_run.sh install .gpu-wheels-2 && bash benchmarks/gpu_run.sh train
#   3. no carry:                bash benchmarks/gpu_run.sh bench
# train [STAGES] (≤ 9.5 min): the end-to-end path, `vlv-ray train jobs/stage{1,2}-paper.yaml`
#   for 30 steps each on one Ray Train worker (benchmarks/bench_train.py), "bench": "train"
#   rows. If both stages do not fit one call: `train 1`, then `train 2` in the next (warm) call.
# bench (≤ 9.5 min): bench_step's bare step with the jobs' keys and with the old ones
#   (model.compile=[unet], fp32 resize, per-tensor AdamW, batch 32 / 8), then one row per
#   key switched on alone from the old set while time lasts, and the kernel profiles.
# Both print the gap between the bare step and the end-to-end figure (`gap`).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT="${OUT:-/tmp/vlv-gpu-out}"; mkdir -p "$OUT"
RESULTS=benchmarks/results.json
PY=python3
OLD1=(--ours model.compile=[unet] --ours model.cuda_graphs=[] --ours model.tower_input=fp32 --ours optim.fused=false)
OLD2=(--ours model.compile=[] --ours model.cuda_graphs=[] --ours model.tower_input=fp32 --ours optim.fused=false)

finish() {  # what comes back: results, profiles, logs (≤ 8 files)
  cp "$RESULTS" "$OUT/results.json" 2>/dev/null
  $PY benchmarks/gpu_gap.py "$RESULTS" | tee "$OUT/gap.txt"
}

case "${1:-}" in
  install)  # wheels → /tmp/site (kept while the machine stays warm)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$2"/*.whl \
      && echo "installed $(ls "$2" | wc -l) wheels from $2" ;;
  train)
    $PY -c "import ray, deepspeed, diffusers, transformers, torch; print('ray', ray.__version__, 'deepspeed', \
deepspeed.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())" \
      || { echo "gpu_run: packages missing: run the two install calls first"; exit 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    timeout 560 $PY benchmarks/bench_train.py --preset paper --steps 30 --checkpoint-every 10 \
      --stages "${2:-1,2}" --workdir /tmp/vlv-e2e --results "$RESULTS" 2>&1 | tail -40
    tail -c 200000 /tmp/vlv-e2e/train-stage1.log > "$OUT/train-stage1.log" 2>/dev/null
    tail -c 200000 /tmp/vlv-e2e/train-stage2.log > "$OUT/train-stage2.log" 2>/dev/null
    finish ;;
  bench)
    start=$SECONDS
    left() { local l=$((400 - (SECONDS - start))); echo $((l > 10 ? l : 10)); }
    B=($PY benchmarks/bench_step.py --preset paper --device cuda --no-reference --steps 8 --warmup 3 --results "$RESULTS")
    timeout "$(left)" "${B[@]}" --stages 1 --label ours
    timeout "$(left)" "${B[@]}" --stages 2 --label ours
    timeout "$(left)" "${B[@]}" --stages 2 --label ours --batch-size 16  # before jobs/stage2-paper.yaml takes 16 (4 workers)
    timeout "$(left)" "${B[@]}" --stages 1 --label old-keys --batch-size 32 "${OLD1[@]}"
    timeout "$(left)" "${B[@]}" --stages 2 --label old-keys --batch-size 8 "${OLD2[@]}"
    # Each key alone, on top of the old set (stage 1 first: most of the run's GPU-hours).
    for key in model.tower_input=compute "model.compile=[unet,tower]" "model.compile=[unet,tower,encoder]" \
               optim.fused=true "model.cuda_graphs=[unet]"; do
      [ "$(left)" -gt 60 ] || break
      extra=(); case "$key" in model.cuda_graphs*) extra=(--ours model.compile=[unet]) ;; esac
      timeout "$(left)" "${B[@]}" --stages 1 --label "old-keys+$key" --batch-size 32 "${OLD1[@]}" "${extra[@]}" --ours "$key"
    done
    for s in 1 2; do
      timeout 80 $PY benchmarks/profile_step.py --preset paper --device cuda --stage "$s" | tail -1 > "$OUT/profile-stage$s.json"
    done
    finish ;;
  gap) finish ;;
  *) echo "usage: bash benchmarks/gpu_run.sh install DIR | train | bench | gap" >&2; exit 2 ;;
esac
