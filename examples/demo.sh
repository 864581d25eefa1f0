#!/usr/bin/env bash
# The NetTailor demo: installs what ntc needs, builds it, pre-trains a
# ResNet-20 on Fashion-MNIST (the source task; cached), then for three
# target tasks of increasing difficulty runs the paper's recipe:
#
#   teacher   fine-tune the whole backbone on the task (lr 0.1, batch 128)
#   tailor    universal blocks frozen + proxies + alphas + new classifier
#   tune      train proxies, alphas, classifier: CE + 10 L_teacher + 0.3 E[C]
#             (lr 0.1 as the reference, 0.03 for fashion-hard, see the
#             task table; alphas lr 0.5, batch 32)
#   prune     drop every universal block whose alpha fell to 0.5 or less (its
#             proxies carry at least half of the layer: the tuning, not a
#             fixed count, decides how many go) and proxies <= 0.075;
#             propagate dead layers
#   retrain   CE + 1 L_teacher, no complexity term (the tuning's lr, batch 32)
#   compile   the tailored network as a native shared object
#
# Why these settings: the target tasks are small (1,347 digits), so the
# number of SGD steps, not images, limits the students; batch 32 gives 4x
# the steps of batch 128 for the same time.  The teacher learns at lr 0.1
# (the reference uses 0.01 over dozens of epochs; with lr 0.01 a short
# teacher stays far from converged), so its features move far from the
# frozen universal ones: a retrain weighted 10 L_teacher then pulls the
# pruned student towards features it cannot reach (digits: 96.0% with
# lambda 10 against 98.0% with 1 and 98.4% with 0, teacher 98.9%).
#
# The demo writes demo-out/RESULTS.md (a table), an SVG of each tailored network
# and each task's .so (all sharing one universal weights file).
#
#   examples/demo.sh            the default run: 11 minutes on 2 AVX-512 cores (25 on 2
#                               AVX2 ones) from a clean clone, with the build and the
#                               backbone's pre-training (2 epochs, 3.5 min; cached for
#                               the next run)
#   examples/demo.sh --full     longer schedules, closer to the paper's
#   examples/demo.sh --smoke    a ResNet-8 and a few hundred images per stage:
#                               checks the whole pipeline in a minute or two
#   NTC_DEMO_OUT=DIR            where everything goes (default demo-out)
#   NTC_DEMO_IMAGES=T,U,R       images each task sees while training its
#                               teacher, tuning and retraining (overrides the mode's)
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}

mode=default
case "${1:-}" in
  --full) mode=full ;;
  --smoke) mode=smoke ;;
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
  *) echo "usage: examples/demo.sh [--full|--smoke]" >&2; exit 2 ;;
esac

NTC_BUILD_TARGETS=ntc .ci/setup
ntc=${NTC:-$PWD/build/ntc}
out=${NTC_DEMO_OUT:-demo-out}
log() { printf '\n== %s\n' "$*"; }

# Schedules: epochs of the source task and, per stage, how many images a
# target task sees (epochs x training-set size, capped for the big task).
depth=20 src_limit=0
case $mode in
  full)    src_epochs=12; teacher_img=150000; tune_img=150000; retrain_img=100000 ;;
  default) src_epochs=2;  teacher_img=12000;  tune_img=15000;  retrain_img=20000 ;;
  smoke)   src_epochs=1;  teacher_img=512;    tune_img=512;    retrain_img=256
           depth=8 src_limit=2048 out=${NTC_DEMO_OUT:-demo-smoke} ;;
esac
if [ -n "${NTC_DEMO_IMAGES:-}" ]; then
  IFS=, read -r teacher_img tune_img retrain_img <<<"$NTC_DEMO_IMAGES"
fi

# ---- the source task: a ResNet-20 pre-trained on Fashion-MNIST ----------------
mkdir -p "$out/cache"
backbone=$out/cache/fmnist-d$depth-e$src_epochs.xml
if [ ! -f "$backbone" ]; then
  log "pre-training ResNet-$depth on Fashion-MNIST ($src_epochs epochs; cached in $out/cache)"
  "$ntc" new resnet --depth "$depth" --input 1x28x28 --classes 10 -o "$out/cache/resnet$depth.xml"
  limit=(); ((src_limit)) && limit=(--limit "$src_limit")
  "$ntc" train "$out/cache/resnet$depth.xml" --data fashion-mnist --epochs "$src_epochs" --batch 128 \
    --lr 0.1 --schedule cosine --augment none "${limit[@]}" -o "$backbone"
else
  log "using the cached backbone $backbone"
fi
src_acc=$("$ntc" eval "$backbone" --data fashion-mnist --split test | sed -n 's/^accuracy \([0-9.]*\)%.*/\1/p')

# ---- the target tasks --------------------------------------------------------------
# name  --data  classes  training images  learning rate of tuning and retraining
#
# fashion-hard tunes at lr 0.03: its logits-distillation term is unstable at
# 0.1.  MSE(z, z_teacher) has curvature (2 lambda_t / K) * |f|^2 in the head's
# weights (f: the pooled features); with K = 4 classes and features of the
# source domain, which are large, lr 0.1 with momentum oscillates (measured:
# loss 144 after 100 steps, chance accuracy).
tasks=(
  "digits       digits        10  1347  0.1"
  "glyphs       glyphs        26  5200  0.1"
  "fashion-hard fashion-hard  4   24000 0.03"
)

epochs_for() { # images-to-see train-size -> epochs (at least 1)
  local e=$(( ($1 + $2 - 1) / $2 ))
  echo $(( e < 1 ? 1 : e ))
}
limit_for() { # images-to-see train-size -> examples per epoch
  local e; e=$(epochs_for "$1" "$2")
  local l=$(( $1 / e ))
  echo $(( l > $2 ? $2 : l ))
}

rows=()
for t in "${tasks[@]}"; do
  read -r name data classes n_train lr <<<"$t"
  d=$out/$name
  mkdir -p "$d"
  stage() { # stage-name images -> "--epochs E --limit L"
    echo "--epochs $(epochs_for "$2" "$n_train") --limit $(limit_for "$2" "$n_train")"
  }

  log "$name: teacher (fine-tune the whole backbone)"
  "$ntc" opt "$backbone" --mode=training --passes=new-head:classes=$classes -o "$d/teacher0.xml"
  # shellcheck disable=SC2046
  "$ntc" train "$d/teacher0.xml" --data "$data" $(stage teacher "$teacher_img") --lr 0.1 \
    --schedule cosine -o "$d/teacher.xml"

  log "$name: tailor, tune alphas and proxies (lambda_teacher 10, lambda_complexity 0.3)"
  "$ntc" tailor "$backbone" --max-skip 3 --classes "$classes" -o "$d/student.xml"
  # shellcheck disable=SC2046
  "$ntc" train "$d/student.xml" --teacher "$d/teacher.xml" --data "$data" $(stage tune "$tune_img") \
    --batch 32 --lr "$lr" --alpha-lr 0.5 --lambda-teacher 10 --lambda-complexity 0.3 -o "$d/tuned.xml"

  log "$name: prune (universal blocks with alpha <= 0.5, proxies <= 0.075), retrain (lambda_teacher 1)"
  "$ntc" prune "$d/tuned.xml" --universal-threshold 0.5 --proxy-threshold 0.075 -o "$d/pruned.xml"
  # shellcheck disable=SC2046
  "$ntc" train "$d/pruned.xml" --teacher "$d/teacher.xml" --data "$data" $(stage retrain "$retrain_img") \
    --batch 32 --lr "$lr" --lambda-teacher 1 --lambda-complexity 0 -o "$d/final.xml"

  log "$name: results"
  teacher_acc=$("$ntc" eval "$d/teacher.xml" --data "$data" | sed -n 's/^accuracy \([0-9.]*\)%.*/\1/p')
  final_acc=$("$ntc" eval "$d/final.xml" --data "$data" | sed -n 's/^accuracy \([0-9.]*\)%.*/\1/p')
  "$ntc" stats "$d/final.xml" | tee "$d/stats.txt" | tail -4
  "$ntc" stats "$d/final.xml" --json > "$d/stats.json"
  "$ntc" dot "$d/final.xml" -o "$d/final.dot"
  dot -Tsvg "$d/final.dot" -o "$d/final.svg"

  log "$name: compile to a native shared object"
  "$ntc" compile "$d/final.xml" -o "$d/$name.so" --universal-weights "$out/universal.weights"
  rows+=("$name|$data|$classes|$teacher_acc|$final_acc|$d/stats.json")
done

# ---- the table ---------------------------------------------------------------------
/usr/bin/python3 - "$out/RESULTS.md" "$depth" "$src_acc" "$src_epochs" "$teacher_img,$tune_img,$retrain_img" \
  "${rows[@]}" <<'PY'
import json, sys
path, depth, src_acc, src_epochs, images, rows = sys.argv[1:6] + [sys.argv[6:]]
t_img, u_img, r_img = images.split(",")
lines = [
    f"Source: ResNet-{depth} on Fashion-MNIST, {src_epochs} epochs, test accuracy {src_acc}%.",
    f"Per task: teacher {t_img} training images, tuning {u_img}, retraining {r_img}.",
    "",
    "| task | classes | teacher acc. | tailored acc. | universal blocks kept | proxies kept "
    "| task-specific params | MACs (share of backbone) |",
    "|---|---|---|---|---|---|---|---|",
]
for row in rows:
    name, data, classes, t_acc, f_acc, stats = row.split("|")
    s = json.load(open(stats))
    nt = s["nettailor"]
    lines.append(
        f"| {name} (`--data {data}`) | {classes} | {t_acc}% | {f_acc}% "
        f"| {nt['universal_kept']}/{nt['universal_total']} | {nt['proxies_kept']}/{nt['proxies_total']} "
        f"| {nt['task_params']:,} | {s['totals']['macs'] / 1e6:.2f} M ({100 * nt['macs_share']:.0f}%) |")
open(path, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "done: $out/RESULTS.md, $out/*/final.svg, $out/*/*.so"
