#!/usr/bin/env bash
# A/B of one kernel file in the same session: bench.py in this tree ("new") and in a copy
# whose spdnn/kernels/NAME is replaced by OLD_FILE ("old"), rounds alternating, so both
# see the same machine state. Results go to OUT/ab-{new,old}-ROUND/ and OUT/ab-*.log.
#   bash scripts/kernel_ab.sh pattern.cu old_pattern.cu /tmp/out 2 --neurons 16384 --layers 120
# (on the machine where this tree's .git may lag: git show REV:spdnn/kernels/NAME > OLD_FILE
# here, and carry OLD_FILE in a git-ignored folder)
set -euo pipefail
name=$1 old_file=$2 out=$3 rounds=$4
shift 4
cd "$(dirname "$0")/.."
new=$PWD old=$(mktemp -d)
cp -r spdnn scripts "$old/"
cp "$old_file" "$old/spdnn/kernels/$name"
mkdir -p "$out"
for round in $(seq "$rounds"); do
    for tree in new old; do
        dir=$new; [ "$tree" = old ] && dir=$old
        (cd "$dir" && PYTHONPATH=$dir python3 scripts/bench.py "$@" --out "$out/ab-$tree-$round") \
            > "$out/ab-$tree-$round.log" 2>&1
        echo "$tree $round:"; grep -E " L=[0-9]+: " "$out/ab-$tree-$round.log"
    done
done
rm -rf "$old"
