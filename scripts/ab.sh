#!/usr/bin/env bash
# A/B in one session: this tree's scripts/bench.py run on this tree's spdnn ("new") and on
# another copy of the spdnn package ("old"), rounds alternating, so both see the same
# machine state. Results go to OUT/ab-{new,old}-ROUND/ and OUT/ab-*.log.
#   bash scripts/ab.sh OLD_SPDNN OUT ROUNDS [bench.py options]
# OLD_SPDNN is a directory holding the old package, made here and carried in a git-ignored
# folder (the device machine's .git may lag), for example
#   mkdir -p .device-data/old && git archive REV spdnn | tar -x -C .device-data/old
#   OLD_COMMIT=REV bash scripts/ab.sh .device-data/old/spdnn /tmp/out 2 --neurons 16384 --layers 120
# (for one kernel file: copy spdnn there and put the old kernel in it). The old runs record
# OLD_COMMIT as their commit, the new ones SPDNN_COMMIT as bench.py does.
set -euo pipefail
old_spdnn=$(realpath "$1") out=$2 rounds=$3
shift 3
cd "$(dirname "$0")/.."
# both trees run from fresh copies: the same code has run up to 30% slower at N = 1024 from
# the working tree than from a copy (a process-setup effect, bench/results/march-threads-ab-*)
new=$(mktemp -d) old=$(mktemp -d)
cp -r scripts spdnn "$new/"
cp -r scripts "$old/"
cp -r "$old_spdnn" "$old/spdnn"
mkdir -p "$out"
for round in $(seq "$rounds"); do
    for tree in new old; do
        dir=$new commit=${SPDNN_COMMIT:-}
        [ "$tree" = old ] && dir=$old commit="${OLD_COMMIT:-old tree from $old_spdnn}"
        (cd "$dir" && SPDNN_COMMIT=$commit PYTHONPATH=$dir python3 scripts/bench.py "$@" \
            --out "$out/ab-$tree-$round") \
            > "$out/ab-$tree-$round.log" 2>&1
        echo "$tree $round:"; grep -E " L=[0-9]+: " "$out/ab-$tree-$round.log"
    done
done
rm -rf "$new" "$old"
