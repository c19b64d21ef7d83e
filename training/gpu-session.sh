#!/usr/bin/env bash
# One call on a GPU machine of the device tool (at most 10 minutes, 64 MiB in, 8 files of
# 16 MiB out): bench, then stage y and stage color of RUN, each continuing from what RUN
# holds (or from its config's init), on one shard of the photos; what must come back is
# copied to $OUT. See "Training on a GPU machine" in training/README.md.
#
#   training/gpu-session.sh SHARD Y_MINUTES COLOR_MINUTES [RUN]
#
# A stage given 0 minutes is skipped. Flags after RUN go to both `train` commands (for
# example --max-minutes 12 to stretch a schedule that a later call continues); BENCH_BATCHES
# (default 50) sets the length of the bench.
set -euo pipefail
usage="usage: training/gpu-session.sh SHARD Y_MINUTES COLOR_MINUTES [RUN [TRAIN FLAGS...]]"
shard=${1:?$usage}
y_minutes=${2:?$usage}
color_minutes=${3:?$usage}
run=${4:-runs/gpu-session}
shift $(( $# < 4 ? $# : 4 ))
out=${OUT:?set OUT to the folder whose files come back}
here=$(dirname "$0")
export PYTHONUNBUFFERED=1
python -m training bench --config-file "$here/configs/small-y-gpu-session.json" --data "$shard" --run "$run" \
    --batches "${BENCH_BATCHES:-50}" --json "$out/bench.json" "$@"
if [ "$y_minutes" != 0 ]; then
    python -m training train --config-file "$here/configs/small-y-gpu-session.json" --data "$shard" --run "$run" \
        --session-minutes "$y_minutes" "$@"
fi
if [ "$color_minutes" != 0 ]; then
    python -m training train --config-file "$here/configs/small-color-gpu-session.json" --data "$shard" --run "$run" \
        --init "$run/checkpoint-y.pt" --session-minutes "$color_minutes" "$@"
fi
cp "$run"/checkpoint-*.pt "$run"/train.log "$out"/
cp "$run"/checkpoint-*.safetensors "$out"/ 2>/dev/null || true
ls -l "$out"
