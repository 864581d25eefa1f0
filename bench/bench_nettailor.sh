#!/bin/sh
# Times one NetTailor architecture-tuning step (teacher forward, student
# forward, CE + per-layer and logits distillation + E[C], backward, SGD
# update) in ntc and in PyTorch, and prints the throughput ratios.
#
#   bench/bench_nettailor.sh [NTC_BINARY] [REPEATS] [STEPS] [BATCH]
#                            (default build/ntc, 3, 5, 128)
#
# Network: `ntc new resnet --depth 20 --input 1x28x28 --classes 10` as the
# teacher (a trained teacher is not needed for timing) and
# `ntc tailor --max-skip 3 --classes 10` of it as the student: 9 layers,
# 25 proxies.  PyTorch (bench/torch_nettailor.py) interprets the same two
# XML graphs with the same weights and times the step two ways:
#   torch-reference    every layer computed twice, the second time on
#                      detached inputs for its distillation term (how the
#                      NetTailor reference code gets the stop-gradient);
#   torch-single-pass  every layer once, each local term back-propagated
#                      only into its own layer's parameters; its gradient
#                      equals the reference's (checked on the first repeat).
# ntc's number is `ntc train --teacher`'s images/s over STEPS steps of
# Fashion-MNIST (time inside the steps, mean over the steps); torch's the
# median over STEPS steps after one warm-up step, on the first BATCH
# Fashion-MNIST images.  All on 2 threads.  The three are run interleaved,
# REPEATS times, and the medians compared; the load average is printed
# next to every run because the numbers depend on what else runs.
# A benchmark, not a test.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
ntc=${1:-$here/../build/ntc}
repeats=${2:-3}
steps=${3:-5}
batch=${4:-128}
py=/usr/bin/python3
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ntc" new resnet --depth 20 --input 1x28x28 --classes 10 -o "$tmp/teacher.xml" >/dev/null
"$ntc" tailor "$tmp/teacher.xml" --max-skip 3 --classes 10 -o "$tmp/student.xml" >/dev/null

load() { cut -d" " -f1 /proc/loadavg; }
median() { sort -n | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "architecture-tuning step: ResNet-20 student (max-skip 3) + teacher, 1x28x28, batch $batch,"
echo "$steps steps per run, $repeats interleaved runs, 2 threads; $(nproc) CPUs"
printf '%-4s %-18s %10s %8s\n' run what images/s load
for r in $(seq "$repeats"); do
    l=$(load)
    rm -rf "$tmp/run"
    "$ntc" train "$tmp/student.xml" --teacher "$tmp/teacher.xml" --data fashion-mnist \
        --lambda-teacher 10 --lambda-complexity 0.3 --epochs 1 --limit $((steps * batch)) --batch "$batch" \
        --threads 2 --augment none --no-test --run-dir "$tmp/run" -o "$tmp/tuned.xml" >"$tmp/ntc.log" 2>&1
    # train.jsonl has the rate to 0.1 image/s, the summary line rounds it.
    ips=$(sed -n 's/.*"images_per_s": \([0-9.]*\).*/\1/p' "$tmp/run/train.jsonl" 2>/dev/null | tail -n 1)
    [ -n "$ips" ] || { cat "$tmp/ntc.log" >&2; exit 1; }
    echo "$ips" >>"$tmp/ntc"
    printf '%-4s %-18s %10s %8s\n' "$r" ntc "$ips" "$l"
    check=
    [ "$r" -eq 1 ] && check=--check
    for f in reference single-pass; do
        l=$(load)
        out=$("$py" "$here/torch_nettailor.py" "$tmp/student.xml" "$tmp/teacher.xml" --batch "$batch" \
            --steps "$steps" --warmup 1 --threads 2 --only "$f" $check 2>/dev/null)
        check=
        echo "$out" | grep '^check' || true
        ips=$(echo "$out" | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
        echo "$ips" >>"$tmp/$f"
        printf '%-4s %-18s %10s %8s\n' "$r" "torch-$f" "$ips" "$l"
    done
done
n=$(median <"$tmp/ntc")
tr=$(median <"$tmp/reference")
ts=$(median <"$tmp/single-pass")
echo
echo "medians (images/s): ntc $n, torch-reference $tr, torch-single-pass $ts"
awk -v n="$n" -v r="$tr" -v s="$ts" 'BEGIN {
    printf "ratio ntc / torch-reference          %.2f  (target >= 1.5)\n", n / r
    printf "ratio ntc / torch-single-pass        %.2f\n", n / s
    printf "ratio torch-single-pass / reference  %.2f\n", s / r
}'
