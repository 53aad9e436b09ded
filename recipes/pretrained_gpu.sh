#!/usr/bin/env bash
# `make pretrained-gpu`: continue the shipped network's training on a CUDA GPU for a fixed time, then export.
#
# For a GPU machine lent for minutes, without internet: it needs the repository (with the committed training
# state recipes/checkpoints/NAME-latest.pkl) and the archive WORK/NAME.zip, built beforehand by `make pretrained`
# on any machine. The recipe (recipes/pretrained.py, its learning-rate schedule and --patience) resumes the
# newest run under WORK/runs, else the committed state, until PRETRAINED_GPU_SECONDS; then `timeout` sends
# SIGTERM, train.py writes a stop snapshot and the recipe exports the best snapshot so far. What comes back
# goes to OUT: the run folders without their intermediate snapshots (logs, metrics, fakes, best-snapshot.pkl,
# the last snapshot: enough to continue anywhere) and shipped/NAME.pt.
#
#   PRETRAINED_GPU_SECONDS  training budget in seconds [480]
#   PRETRAINED_WORK         the recipe's work folder [pretrained-work]
#   PRETRAINED_NAME         the shipped name [electro128]
#   PRETRAINED_GPU_SNAP     ticks between snapshots and sfd1k [20: every 10 kimg of cpu128, not every 2.5]
#   OUT                     where results go [pretrained-gpu-out]
#   GPU_PYTHON, WHEELHOUSE  see benchmarks/gpu_python.sh
# Extra arguments go to recipes/pretrained.py. Reference ops (no kernel build): compiling the CUDA kernels
# takes minutes of a short lease, and a network of 1 M parameters gains little from them.
set -uo pipefail
cd "$(dirname "$0")/.."
GPU_TOOL=pretrained-gpu
BUDGET="${PRETRAINED_GPU_SECONDS:-480}"
[[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || { echo "$GPU_TOOL: PRETRAINED_GPU_SECONDS=$BUDGET is not a whole number of seconds > 0"; exit 2; }
WORK="${PRETRAINED_WORK:-pretrained-work}"
NAME="${PRETRAINED_NAME:-electro128}"
DEST="${OUT:-pretrained-gpu-out}"
if [[ ! -f "$WORK/$NAME.zip" ]]; then
  echo "$GPU_TOOL: $WORK/$NAME.zip: no such archive; build it with make pretrained (or set PRETRAINED_WORK)"
  exit 2
fi
if [[ -n "${PRETRAINED_GPU_ALLOW_CPU:-}" ]]; then
  PY="${GPU_PYTHON:-python3}"          # tests: the same steps on a CPU
else
  source benchmarks/gpu_python.sh
fi
mkdir -p "$DEST"
start=$(date +%s)
timeout -s TERM -k 300 "$BUDGET" "$PY" recipes/pretrained.py --work "$WORK" --name "$NAME" \
  --export-dir "$DEST/shipped" "--train-flag=--snap=${PRETRAINED_GPU_SNAP:-20}" --train-flag=--ops=reference "$@"
rc=$?
echo "$GPU_TOOL: recipe exit $rc after $(( $(date +%s) - start )) s"
for run in "$WORK"/runs/*-"$NAME"; do
  [[ -d "$run" ]] || continue
  keep="$DEST/runs/$(basename "$run")"
  mkdir -p "$keep"
  last=$(ls "$run"/network-snapshot-*.pkl 2>/dev/null | sort | tail -n 1)
  for f in "$run"/*; do
    case "$(basename "$f")" in
      network-snapshot-*.pkl) [[ "$f" == "$last" ]] && cp "$f" "$keep/" ;;
      *) cp -r "$f" "$keep/" ;;
    esac
  done
done
[[ -f "$DEST/shipped/$NAME.pt" ]] || { echo "$GPU_TOOL: no $NAME.pt was exported"; exit 1; }
echo "$GPU_TOOL: exported $DEST/shipped/$NAME.pt; runs in $DEST/runs"
