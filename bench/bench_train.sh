#!/bin/sh
# Times training steps of ntc next to PyTorch on the same network and
# batch, and prints the throughput ratio ntc / torch (above 1: ntc trains
# faster).
#
#   bench/bench_train.sh [NTC_BINARY] [STEPS] [BATCH]   (default build/ntc, 20, 128)
#
# Network: `ntc new resnet --depth 20 --input 1x28x28 --classes 10` and the
# same ResNet in PyTorch (bench/torch_train.py).  A step is forward,
# cross-entropy, backward (batchnorm in training mode) and an SGD update
# with momentum and weight decay, on 2 threads on both sides (ntc: its
# pool with OpenBLAS pinned to one thread; torch: set_num_threads(2)).
# ntc's number is `ntc train`'s images/s over STEPS steps of Fashion-MNIST
# (time inside the steps: data loading and checkpoints are not counted);
# torch's is the mean over STEPS steps on random inputs after 3 warm-up
# steps.  A benchmark, not a test: numbers depend on the machine and on
# what else runs on it (the load is printed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
ntc=${1:-$here/../build/ntc}
steps=${2:-20}
batch=${3:-128}
py=/usr/bin/python3
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ntc" new resnet --depth 20 --input 1x28x28 --classes 10 -o "$tmp/bb.xml" >/dev/null

echo "training step, depth-20 ResNet, 1x28x28, batch $batch, $steps steps, 2 threads; $(nproc) CPUs, load $(cut -d" " -f1 /proc/loadavg)"
"$ntc" train "$tmp/bb.xml" --data fashion-mnist --epochs 1 --limit $((steps * batch)) --batch "$batch" \
    --threads 2 --augment none --no-test --run-dir "$tmp/run" -o "$tmp/t.xml" >"$tmp/ntc.log" 2>&1
ntc_ips=$(sed -n 's/^trained .*, \([0-9.]*\) images\/s$/\1/p' "$tmp/ntc.log")
torch_line=$("$py" "$here/torch_train.py" --batch "$batch" --steps "$steps" --threads 2)
torch_ips=$(echo "$torch_line" | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
echo "ntc   images/s $ntc_ips"
echo "torch images/s $torch_ips"
awk -v a="$ntc_ips" -v b="$torch_ips" 'BEGIN { printf "ratio ntc/torch %.2f (above 1: ntc trains faster)\n", a / b }'
