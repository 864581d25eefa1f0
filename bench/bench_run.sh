#!/bin/sh
# Times `ntc run` (the interpreter) on the depth-20 backbone at batch 1 and
# 64 next to PyTorch running the same graph with the same weights
# (bench/torch_peer.py: eval, no_grad, 2 threads by default), checks that the outputs
# agree and prints the time ratio ntc / torch (below 1: ntc is faster).
#
#   bench/bench_run.sh [NTC_BINARY] [REPEATS] [THREADS]   (default build/ntc, 7, 2)
#
# THREADS applies to both sides (1 compares single-core work, which a busy
# machine disturbs less than two threads that wait for each other).
# Each repeat pushes 64 images through: at batch 1 that is 64 forward
# passes of one image (latency), at batch 64 one pass (throughput).  The
# fastest repeat is reported (on a shared machine it is the least disturbed
# one), the median next to it; both sides load the graph first, so start-up
# is not timed.  This is a benchmark, not a test: numbers depend on the
# machine and on what else runs on it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
ntc=${1:-$here/../build/ntc}
repeats=${2:-7}
threads=${3:-2}
py=/usr/bin/python3
# The machines' OpenBLAS kernels are selected by this (see TOOLCHAIN.md);
# without it OpenBLAS 0.3.21 falls back to slow generic kernels on Zen 5.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ntc" new resnet --depth 20 --input 1x28x28 --classes 10 -o "$tmp/bb.xml" >/dev/null
"$py" -c "import numpy as np; np.save('$tmp/x.npy', np.random.RandomState(1).randn(64, 1, 28, 28).astype(np.float32))"

# Fastest and median of the "N items in MS ms" lines of a log.
best_ms() { sed -n 's/.* items in \([0-9.]*\) ms.*/\1/p' "$1" | sort -g | head -1; }
median_ms() {
    sed -n 's/.* items in \([0-9.]*\) ms.*/\1/p' "$1" | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

echo "depth-20 ResNet, 1x28x28, 10 classes; 64 images per repeat, best of $repeats; $threads threads each; $(nproc) CPUs, load $(cut -d" " -f1 /proc/loadavg)"
for batch in 1 64; do
    "$ntc" run "$tmp/bb.xml" --input "$tmp/x.npy" -o "$tmp/y_ntc.npy" --batch $batch \
        --repeat "$repeats" --threads "$threads" --time 2>"$tmp/ntc.log"
    "$py" "$here/torch_peer.py" "$tmp/bb.xml" "$tmp/x.npy" "$tmp/y_torch.npy" --batch $batch \
        --threads "$threads" --repeat "$repeats" 2>"$tmp/torch.log"
    "$py" - "$tmp/y_ntc.npy" "$tmp/y_torch.npy" <<'EOF'
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
err = float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))
if a.shape != b.shape or err > 1e-4:
    sys.exit(f"outputs disagree: shapes {a.shape} {b.shape}, max relative difference {err:.3g}")
print(f"  outputs agree (max difference {err:.2g} relative to the largest logit)")
EOF
    n=$(best_ms "$tmp/ntc.log") nm=$(median_ms "$tmp/ntc.log")
    t=$(best_ms "$tmp/torch.log") tm=$(median_ms "$tmp/torch.log")
    awk -v b=$batch -v n="$n" -v t="$t" -v nm="$nm" -v tm="$tm" 'BEGIN {
        printf "batch %2d: ntc %8.2f ms  torch %8.2f ms  per 64 images (%.0f vs %.0f images/s);  ratio ntc/torch %.2f  (medians %.2f / %.2f ms: %.2f)\n",
               b, n, t, 64000 / n, 64000 / t, n / t, nm, tm, nm / tm }'
done
