#!/bin/sh
# The capacity study (training/study/run.py) from a snapshot of one commit (STUDY_COMMIT, default HEAD),
# so that uncommitted edits in this working tree cannot change a study in progress. Run from the repository root.
set -eu
commit=$(git rev-parse "${STUDY_COMMIT:-HEAD}")
code=runs/study-code/$commit
if [ ! -d "$code" ]; then
    mkdir -p "$code.tmp"
    git archive "$commit" qgac_transforms training | tar -x -C "$code.tmp"
    mv "$code.tmp" "$code"
fi
# PYTHONSAFEPATH: python -m must not put the working tree (the current folder) before the snapshot
PYTHONSAFEPATH=1 PYTHONPATH=$code exec python -m training.study.run "$@" --commit="$commit"
