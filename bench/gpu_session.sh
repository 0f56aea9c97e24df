#!/usr/bin/env bash
# Everything bench/ measures on a CUDA machine, as one bounded run, steps in order of importance:
#
#   bench/gpu_session.sh [--total SECONDS] STEP...      (steps: tests scaling stage e2e compile)
#
# A GPU machine may lack ffmpeg and some Python packages: a folder `.gpu/` beside the project
# (CARRY=...) can hold `bin/ffmpeg.xz`, `bin/ffprobe.xz` (static builds), `whl/*.whl` (installed
# with --no-deps into a scratch folder), `clip-track.npz` (bench/lipsync_gpu.py --track-only,
# made where MediaPipe is) and `dub-ad/` (bench/dub_gpu.py --prepare DIR, ditto); bench/gpu_wheels.txt
# lists the wheels and how to fetch them. Each step has its own
# timeout, cut to what is left of --total; its output goes to $OUT/<step>.txt as it comes.
set -uo pipefail
cd "$(dirname "$0")/.."
TOTAL=560
if [ "${1:-}" = "--total" ]; then TOTAL=$2; shift 2; fi
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(tests scaling stage e2e compile)
OUT=${OUT:-gpu-out}
CARRY=${CARRY:-.gpu}
SCRATCH=$(mktemp -d /tmp/polydub-gpu-XXXXXX)
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

for tool in ffmpeg ffprobe; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ -f "$CARRY/bin/$tool.xz" ]; then
    mkdir -p "$SCRATCH/bin"  # python's lzma: the machine may have no xz
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$CARRY/bin/$tool.xz" "$SCRATCH/bin/$tool" && chmod +x "$SCRATCH/bin/$tool"
  fi
done
export PATH="$SCRATCH/bin:$PATH"
if compgen -G "$CARRY/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SCRATCH/site" \
    "$CARRY"/whl/*.whl 2>&1 | tail -3
  export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import sys, torch, numpy, diffusers, whisper; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'diffusers', diffusers.__version__)"
  ffmpeg -hide_banner -version | head -1
  nproc
} 2>&1 | tee "$OUT/machine.txt"

left() { echo $(( TOTAL - ($(date +%s) - START) )); }

run_step() {  # name, max seconds, command...
  local name=$1 max=$2; shift 2
  local budget; budget=$(left)
  [ "$budget" -gt "$max" ] && budget=$max
  if [ "$budget" -lt 20 ]; then echo "== $name: skipped, $(left) s left" | tee "$OUT/$name.txt"; return; fi
  echo "== $name (at most $budget s; $(left) s left) $(date +%T)"
  timeout --kill-after=5 "$budget" "$@" 2>&1 | grep -v -E "^[WI][0-9]{4} |UserWarning|warnings.warn|kept in float32" \
    | tee "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"
}

for step in "${STEPS[@]}"; do
  case $step in
    tests) run_step tests 90 python3 -m pytest -q -p no:cacheprovider tests/lipsync/test_graphs.py ;;
    scaling) run_step scaling 100 python3 bench/lipsync_compile.py --device cuda --full --res 256 --langs 3 \
               --steps 20 --dtype float16 --no-compile --no-explain --scaling 1,6,12 ;;
    stage) run_step stage 330 python3 bench/lipsync_gpu.py --budget "${STAGE_BUDGET:-200}" \
             --reference-frames 48,32 --track "$CARRY/clip-track.npz" --json "$OUT/stage.json" ;;
    e2e) run_step e2e 300 python3 bench/dub_gpu.py --inputs "$CARRY/dub-ad" --json "$OUT/e2e.json" ;;
    compile) run_step compile 240 python3 bench/lipsync_compile.py --device cuda --full --res 256 --langs 3 \
               --steps 20 --dtype float16 --no-explain ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
rm -rf "$SCRATCH"
echo "== done after $(( $(date +%s) - START )) s"
