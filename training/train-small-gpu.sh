#!/usr/bin/env bash
# qgac-small on one GPU in about eight minutes: statistics, stage y, stage color.
#
#   training/train-small-gpu.sh DATA [RUN [Y_MINUTES COLOR_MINUTES]]
#
# DATA is a folder of training images (the shipped weights used the output of
# `python -m training prepare`); RUN (default runs/small-gpu) receives stats.json,
# checkpoint-y.pt, checkpoint-color.pt and train.log. Each stage stops on its time
# budget (max_minutes in its config file, 4.5 and 2.5, or the two numbers given); a
# rerun resumes a stage that was cut short.
set -euo pipefail
data=${1:?usage: training/train-small-gpu.sh DATA [RUN]}
run=${2:-runs/small-gpu}
y_minutes=${3:-4.5}
color_minutes=${4:-2.5}
here=$(dirname "$0")
mkdir -p "$run"
[ -f "$run/stats.json" ] || python -m training stats --data "$data" --out "$run/stats.json"
python -m training train --config-file "$here/small-y-gpu.json" --data "$data" --run "$run" --stats "$run/stats.json" \
    --max-minutes "$y_minutes"
python -m training train --config-file "$here/small-color-gpu.json" --data "$data" --run "$run" \
    --init "$run/checkpoint-y.pt" --max-minutes "$color_minutes"
