#!/usr/bin/env bash
# Download the official Sparse DNN Graph Challenge data set in the layout `spdnn run` reads.
#
#   scripts/download.sh [-n N]... [-l L]... [--gunzip] [--keep-archives] [DEST]
#
#   scripts/download.sh -n 1024 -l 120          # the smallest problem, about 1.3 GiB on disk
#   spdnn run --data-dir data/ -n 1024 -l 120    # then run and verify it
#
# Defaults: every N (1024 4096 16384 65536), every L (120 480 1920), DEST = data/ beside
# this script's folder. What lands in DEST, as on graphchallenge.org:
#   neuron{N}/n{N}-l{k}.tsv            k = 1..1920 (the 120- and 480-layer networks are the
#                                      first layers of the same files)
#   sparse-images-{N}.tsv.gz           60000 images (.tsv with --gunzip; spdnn reads both)
#   neuron{N}-l{L}-categories.tsv      the truth of each L
# Sizes: each archive unpacks all 1920 layers of one N, from 1.2 GiB of TSV (N = 1024) to
# 92.5 GiB (N = 65536), about 137 GB with the images for all four; check the free space.
#
# Files come from the challenge's public AWS bucket: weights and truth under
# $BASE/dnn/, images under $BASE/mnist/. A download goes to NAME.part and is renamed
# when complete; an interrupted run resumes where it stopped. Nothing here runs in tests.

set -euo pipefail

BASE="https://graphchallenge.s3.amazonaws.com/synthetic/sparsechallenge_2019"
ALL_NEURONS=(1024 4096 16384 65536)
ALL_LAYERS=(120 480 1920)
LAYER_FILES=1920

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

neurons=() layers=() gunzip=0 keep=0 dest=""
while (($#)); do
    case "$1" in
        -n|--neurons) neurons+=("$2"); shift 2 ;;
        -l|--layers) layers+=("$2"); shift 2 ;;
        --gunzip) gunzip=1; shift ;;
        --keep-archives) keep=1; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "download.sh: unknown option $1" >&2; usage 2 ;;
        *) dest="$1"; shift ;;
    esac
done
((${#neurons[@]})) || neurons=("${ALL_NEURONS[@]}")
((${#layers[@]})) || layers=("${ALL_LAYERS[@]}")
dest="${dest:-$(cd "$(dirname "$0")/.." && pwd)/data}"
for n in "${neurons[@]}"; do
    [[ " ${ALL_NEURONS[*]} " == *" $n "* ]] || { echo "download.sh: no official N = $n" >&2; exit 2; }
done
for l in "${layers[@]}"; do
    [[ " ${ALL_LAYERS[*]} " == *" $l "* ]] || { echo "download.sh: no official L = $l" >&2; exit 2; }
done

if command -v curl >/dev/null; then
    fetch() { curl -fL --retry 3 -C - -o "$2" "$1"; }
elif command -v wget >/dev/null; then
    fetch() { wget -c -O "$2" "$1"; }
else
    echo "download.sh: needs curl or wget" >&2; exit 1
fi

# get URL FILE: download unless FILE is already complete
get() {
    local url="$1" file="$2"
    if [[ -s "$file" ]]; then echo "have $file"; return; fi
    echo "get  $url" >&2
    fetch "$url" "$file.part"
    mv "$file.part" "$file"
}

mkdir -p "$dest"
cd "$dest"
for n in "${neurons[@]}"; do
    found=$(find "neuron$n" -maxdepth 1 -name "n$n-l*.tsv" 2>/dev/null | wc -l)
    if ((found < LAYER_FILES)); then
        get "$BASE/dnn/neuron$n.tar.gz" "neuron$n.tar.gz"
        echo "unpack neuron$n.tar.gz" >&2
        tar -xzf "neuron$n.tar.gz"
        found=$(find "neuron$n" -maxdepth 1 -name "n$n-l*.tsv" | wc -l)
        ((found == LAYER_FILES)) || { echo "download.sh: neuron$n/ holds $found layer files, not $LAYER_FILES" >&2; exit 1; }
        ((keep)) || rm -f "neuron$n.tar.gz"
    else
        echo "have neuron$n/ ($found layer files)"
    fi

    if [[ ! -s "sparse-images-$n.tsv" ]]; then
        get "$BASE/mnist/sparse-images-$n.tsv.gz" "sparse-images-$n.tsv.gz"
        gzip -t "sparse-images-$n.tsv.gz"
        if ((gunzip)); then gunzip "sparse-images-$n.tsv.gz"; fi
    fi

    for l in "${layers[@]}"; do
        get "$BASE/dnn/neuron$n-l$l-categories.tsv" "neuron$n-l$l-categories.tsv"
    done
done
echo "done: $dest"
