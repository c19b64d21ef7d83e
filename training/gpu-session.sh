#!/usr/bin/env bash
# One call on a GPU machine of the device tool (at most 10 minutes, 64 MiB in, 8 files of
# 16 MiB out): bench, stage y, then stage color from stage y's best weights, on one shard of
# the photos (held out: the validation/ folder beside it); then the colour stage's best
# weights (the starting ones if training only made them worse) are exported in float16 to
# $OUT/hub/NAME, in shards of at most 15 MiB when larger. See "Training on a GPU machine"
# in training/README.md.
#
#   training/gpu-session.sh SHARD Y_MINUTES COLOR_MINUTES [RUN [TRAIN FLAGS...]]
#
# A stage given 0 minutes is skipped. RUN defaults to runs/gpu-session-CONFIG; a later call
# on a warm machine resumes it, and when its stage y trains, stage color starts afresh from
# the new best-y.pt (the old colour checkpoint is moved to RUN/superseded-*). A call cut
# short still exports the best colour weights it has. Flags after RUN go to both `train`
# commands (for example --max-minutes 12 to stretch a schedule that a later call on the
# same warm machine continues). Environment:
# CONFIG (default small) picks training/configs/CONFIG-{y,color}-gpu-session.json; NAME
# (default qgac-CONFIG) names the exported folder; where a folder of HUB (colon-separated,
# default "qgac_transforms/weights:hub": embedded models, then the others) holds a
# committed model NAME, stage y starts from the first such, so a model trains on across
# sessions (else the config's init: random weights for a new model, whose colour network
# starts from the folder COLOR_FROM names, if set). BENCH_BATCHES (default 20) sets the
# length of the bench. What comes back: bench.json, train.log and the exported folder's
# files (four; six for a model of two shards, the most that fits in 8 files).
set -euo pipefail
usage="usage: training/gpu-session.sh SHARD Y_MINUTES COLOR_MINUTES [RUN [TRAIN FLAGS...]]"
shard=${1:?$usage}
y_minutes=${2:?$usage}
color_minutes=${3:?$usage}
run=${4:-runs/gpu-session-${CONFIG:-small}}
shift $(( $# < 4 ? $# : 4 ))
out=${OUT:?set OUT to the folder whose files come back}
config=${CONFIG:-small}
name=${NAME:-qgac-$config}
committed=
IFS=: read -r -a model_folders <<< "${HUB:-qgac_transforms/weights:hub}"
for models in "${model_folders[@]}"; do
    if [ -e "$models/$name/config.json" ]; then
        committed=$models/$name
        break
    fi
done
here=$(dirname "$0")
y_config=$here/configs/$config-y-gpu-session.json
color_config=$here/configs/$config-color-gpu-session.json
export PYTHONUNBUFFERED=1
export_colour() {
    python -m training export --run "$run" --stage color --name "$name" --hub-dir "$out/hub" --half \
        --max-shard-mb 15
}
finish() {  # the log, and the best colour weights so far, even of a call cut short
    cp "$run"/train.log "$out"/ 2>/dev/null || true
    if [ "$color_minutes" != 0 ] && [ ! -e "$out/hub/$name/config.json" ] && [ -e "$run/best-color.pt" ]; then
        export_colour || true
    fi
    ls -lR "$out"
}
trap finish EXIT
y_init=()  # the committed model of this name, if there is one
if [ -n "$committed" ]; then
    y_init=(--init "$committed")
elif [ -n "${COLOR_FROM:-}" ]; then
    y_init=(--init-color "$COLOR_FROM")
fi
data=(--data "$shard")  # and the held-out photos beside the shard, as `training shard` writes them
if [ -d "$(dirname "$shard")/validation" ]; then
    data+=(--validation-data "$(dirname "$shard")/validation")
fi
python -m training bench --config-file "$y_config" "${data[@]}" --run "$run" "${y_init[@]}" \
    --batches "${BENCH_BATCHES:-20}" --json "$out/bench.json" "$@"
if [ "$y_minutes" != 0 ]; then
    python -m training train --config-file "$y_config" "${data[@]}" --run "$run" "${y_init[@]}" \
        --session-minutes "$y_minutes" "$@"
fi
color_init=("${y_init[@]}")  # stage y's best, from this call or an earlier one on the same RUN
if [ -e "$run/best-y.pt" ]; then
    color_init=(--init "$run/best-y.pt")
fi
if [ "$color_minutes" != 0 ]; then
    if [ "$y_minutes" != 0 ] && [ -e "$run/checkpoint-color.pt" ]; then
        # stage y went on in this call: stage color starts afresh from its new best, not its old Y network
        aside=$run/superseded-$(date +%Y%m%d-%H%M%S)
        mkdir -p "$aside"
        mv "$run"/checkpoint-color* "$run"/best-color* "$aside"/ 2>/dev/null || true
    fi
    python -m training train --config-file "$color_config" "${data[@]}" --run "$run" \
        "${color_init[@]}" --session-minutes "$color_minutes" "$@"
    export_colour
fi
