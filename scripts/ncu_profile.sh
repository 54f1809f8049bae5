#!/usr/bin/env bash
# Nsight Compute of one kernel launch, for one or more spdnn trees, each with its SASS and
# every SASS line's executions, threads and stall samples. On a GPU machine, from the
# repository root:
#   bash scripts/ncu_profile.sh OUT [LABEL=TREE ...]
# Each TREE holds spdnn/ and scripts/ (this repository when none is given: label "here";
# make one with `mkdir -p T && git archive REV spdnn scripts | tar -x -C T`). The scripts
# run from inside each tree, since scripts/warm_engine.py and profile_layer.py put their
# own tree first on sys.path (PYTHONPATH alone does not choose the tree).
# Settings (environment): KERNEL, "run" (default: the run kernel's launch of layers 2 to
# DEPTH, scripts/profile_layer.py) or "march" (the second and third march launches of
# scripts/timeline.py); NEURONS (default "1024 4096"); DEPTH (default 6 at 1024, 8 at
# 4096, 10 at 16384, 12 at 65536: RadiX-Net's first block); NCU_SECONDS, the limit of
# each profile (default 200). Writes OUT/ncu.tgz (the device tool returns at most 8 files)
# holding, per tree and N, ncu-DATE-nN-KERNEL-LABEL.txt (the command, then every section)
# and .sass.csv.gz (`ncu --page source --csv --print-source sass`); prints durations.
set -uo pipefail
out=${1:?usage: ncu_profile.sh OUT [LABEL=TREE ...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
trees=("$@")
[ ${#trees[@]} -gt 0 ] || trees=("here=$root")
kernel=${KERNEL:-run}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/ncu"
sections="--section SpeedOfLight --section WarpStateStats --section InstructionStats"
sections+=" --section SourceCounters --section LaunchStats --section Occupancy"
default_depth() { case $1 in 1024) echo 6 ;; 4096) echo 8 ;; 16384) echo 10 ;; *) echo 12 ;; esac; }

for spec in "${trees[@]}"; do
    [[ $spec == ?*=?* ]] || { echo "ncu_profile.sh: give each tree as LABEL=TREE, not '$spec'" >&2; exit 2; }
    label=${spec%%=*} tree=$(realpath "${spec#*=}")
    for n in ${NEURONS:-1024 4096}; do
        if [ "$kernel" = run ]; then
            depth=${DEPTH:-$(default_depth "$n")}
            profile="--profile-from-start off"
            run="python3 scripts/profile_layer.py --neurons $n --layer 2 --depth $depth"
        else
            profile="--kernel-name march --launch-skip 2 --launch-count 2"
            run="python3 scripts/timeline.py --neurons $n --runs 1"
        fi
        command="ncu $profile $sections -o report $run"
        name=$work/ncu/ncu-$(date -u +%F)-n$n-$kernel-$label
        echo "# $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%F), tree $label ($tree): $command" > "$name.txt"
        # shellcheck disable=SC2086 - the options are separate words on purpose
        (cd "$tree" && PYTHONPATH=$tree timeout "${NCU_SECONDS:-200}" \
            ncu $profile $sections -f -o "$work/report" $run) > "$name.log" 2>&1
        ncu -i "$work/report.ncu-rep" --print-details all >> "$name.txt" 2>&1
        ncu -i "$work/report.ncu-rep" --page source --csv --print-source sass 2>&1 \
            | gzip -9 > "$name.sass.csv.gz"
        echo "== $label N=$n"
        grep -E '^ +Duration|^ +Executed Instructions  ' "$name.txt" | head -4
    done
done
tar czf "$out/ncu.tgz" -C "$work" ncu
