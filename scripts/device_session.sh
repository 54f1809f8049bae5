#!/usr/bin/env bash
# One device call's proof, packed for the trip back (the device tool returns at most 8
# files from $OUT, so everything goes into one archive): the GPU tests and the full
# benchmark (scripts/gpu_check.sh), then, if asked and the tests passed, an A/B of this
# tree against an older spdnn package (scripts/ab.sh). From the repository root:
#   SPDNN_COMMIT=REV bash scripts/device_session.sh OUT
#   SPDNN_COMMIT=REV AB_OLD=.device-data/old/spdnn OLD_COMMIT=OLDREV bash scripts/device_session.sh OUT
# (AB_OLD and OLD_COMMIT may list several trees, comma-separated: scripts/ab.sh)
# Settings (environment): FULL=0 skips the full benchmark (GPU tests only; TESTS, a
# pytest -k expression, picks some of them, to spare device time); AB_ROUNDS
# (default 2); AB_OPTIONS, the A/B's bench.py options (default: every N, 120 layers, no
# baseline, 1000 rows checked, median of 5); FULL_SECONDS and AB_SECONDS, the time
# limits of the two parts (default 330 and 200); AFTER, a command run last (its output
# in after.log, limit AFTER_SECONDS, default 120), for example
#   AFTER="python3 scripts/timeline.py --neurons 1024 --runs 5"
# Writes OUT/session.tgz holding full.log, full/*.json, ab/ab-{new,LABEL}-ROUND.log and
# their JSON, after.log; prints the summaries.
set -uo pipefail
out=${1:?usage: device_session.sh OUT}
cd "$(dirname "$0")/.."
mkdir -p "$out"
work=$(mktemp -d)
trap 'tar czf "$out/session.tgz" -C "$work" . && rm -rf "$work"' EXIT

nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv > "$work/smi.txt" 2>&1
if [ "${FULL:-1}" = 1 ]; then
    timeout "${FULL_SECONDS:-330}" bash scripts/gpu_check.sh --repeat 5 --baseline-seconds 1 \
        --out "$work/full" > "$work/full.log" 2>&1
else
    timeout "${FULL_SECONDS:-330}" python3 -m pytest -q -m gpu -p no:cacheprovider \
        ${TESTS:+-k "$TESTS"} tests/test_cuda.py > "$work/full.log" 2>&1
fi
status=$?
echo "exit status $status" >> "$work/full.log"
grep -E "passed|failed|error" "$work/full.log" | tail -3
tail -n 17 "$work/full.log"
[ "$status" = 0 ] || exit "$status"

if [ -n "${AB_OLD:-}" ]; then
    # shellcheck disable=SC2086 - AB_OPTIONS are separate words on purpose
    timeout "${AB_SECONDS:-200}" bash scripts/ab.sh "$AB_OLD" "$work/ab" "${AB_ROUNDS:-2}" \
        ${AB_OPTIONS:---neurons 1024 4096 16384 65536 --layers 120 --no-baseline --check-rows 1000 --repeat 5}
fi

if [ -n "${AFTER:-}" ]; then
    timeout "${AFTER_SECONDS:-120}" bash -c "$AFTER" > "$work/after.log" 2>&1
    tail -n 40 "$work/after.log"
fi
