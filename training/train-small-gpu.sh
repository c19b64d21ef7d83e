#!/usr/bin/env bash
# qgac-small on one GPU in about eight minutes: statistics, stage y, stage color.
#
#   training/train-small-gpu.sh DATA [RUN [Y_MINUTES COLOR_MINUTES]]
#
# DATA is a folder of training images (the shipped weights used the output of
# `python -m training prepare`); RUN (default runs/small-gpu) receives stats.json,
# checkpoint-y.pt, checkpoint-color.pt and train.log. Each stage stops on its time
# budget (max_minutes in its config file, or the two numbers given); a
# rerun resumes a stage that was cut short.
set -euo pipefail
data=${1:?usage: training/train-small-gpu.sh DATA [RUN [Y_MINUTES COLOR_MINUTES]]}
run=${2:-runs/small-gpu}
here=$(dirname "$0")
mkdir -p "$run"
[ -f "$run/stats.json" ] || python -m training stats --data "$data" --out "$run/stats.json"
python -m training train --config-file "$here/configs/small-y-gpu.json" --data "$data" --run "$run" --stats "$run/stats.json" \
    ${3:+--max-minutes "$3"}
python -m training train --config-file "$here/configs/small-color-gpu.json" --data "$data" --run "$run" \
    --init "$run/checkpoint-y.pt" ${4:+--max-minutes "$4"}
