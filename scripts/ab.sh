#!/usr/bin/env bash
# A/B in one session: this tree's scripts/bench.py run on this tree's spdnn ("new") and on
# other copies of the spdnn package, rounds alternating, so that all see the same machine
# state. Results go to OUT/ab-LABEL-ROUND/ and OUT/ab-LABEL-ROUND.log.
#   bash scripts/ab.sh OLD_SPDNN[,OLD_SPDNN...] OUT ROUNDS [bench.py options]
# Each OLD_SPDNN is a directory holding a spdnn package, made here and carried in a
# git-ignored folder (the device machine's .git may lag); its label is the name of the
# folder holding it, for example
#   mkdir -p .device-data/old && git archive REV spdnn | tar -x -C .device-data/old
#   OLD_COMMIT=REV bash scripts/ab.sh .device-data/old/spdnn /tmp/out 2 --neurons 16384 --layers 120
# (label "old"; for one kernel file: copy spdnn there and put the old kernel in it).
# OLD_COMMIT lists the commits of the old trees in the same order, comma-separated; the
# runs record them as their commit, the new ones SPDNN_COMMIT as bench.py does.
set -euo pipefail
IFS=, read -r -a olds <<< "$1"
IFS=, read -r -a old_commits <<< "${OLD_COMMIT:-}"
out=$2 rounds=$3
shift 3
cd "$(dirname "$0")/.."
# every tree runs from a fresh copy: the same code has run up to 30% slower at N = 1024
# from the working tree than from a copy (a process-setup effect, bench/results/march-threads-ab-*)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
labels=(new)
mkdir -p "$work/new" "$out"
cp -r scripts spdnn "$work/new/"
for index in "${!olds[@]}"; do
    label=$(basename "$(dirname "$(realpath "${olds[$index]}")")")
    [ -e "$work/$label" ] && { echo "ab.sh: two trees labelled $label" >&2; exit 2; }
    mkdir -p "$work/$label"
    cp -r scripts "$work/$label/"
    cp -r "${olds[$index]}" "$work/$label/spdnn"
    labels+=("$label")
    commits[$index]=${old_commits[$index]:-old tree from ${olds[$index]}}
done
for round in $(seq "$rounds"); do
    for index in "${!labels[@]}"; do
        label=${labels[$index]} commit=${SPDNN_COMMIT:-}
        [ "$index" -gt 0 ] && commit=${commits[$((index - 1))]}
        (cd "$work/$label" && SPDNN_COMMIT=$commit PYTHONPATH=$work/$label python3 \
            scripts/bench.py "$@" --out "$out/ab-$label-$round") > "$out/ab-$label-$round.log" 2>&1
        echo "$label $round:"; grep -E " L=[0-9]+: " "$out/ab-$label-$round.log" || true
    done
done
