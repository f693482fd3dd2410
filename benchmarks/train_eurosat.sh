#!/usr/bin/env bash
# Learned slimmable training of the shipped vit_tiny_eurosat on real EuroSAT, and its evaluation (issue 18):
# train on the model's 4,000 training images only, sweep the trained and the starting checkpoint on its
# 1,000 held-out images (k-NN and linear probe, the paper's 31 widths, 5 seeds), plot both, compare.
#
#   bash benchmarks/train_eurosat.sh [DATA=../shared/data/eurosat_rgb] [OUT=runs/train-eurosat]
#
# Results of 2026-12-05: benchmarks/results/cpu-amd-epyc-2threads-2026-12-05-train-eurosat/.
set -euo pipefail
DATA=${DATA:-../shared/data/eurosat_rgb}
OUT=${OUT:-runs/train-eurosat}
SPLIT=slimkern/data/weights/vit_tiny_eurosat_split.json
WEIGHTS=slimkern/data/weights/vit_tiny_eurosat.safetensors
# one thread per process: with two OpenMP threads on a busy 2-core machine every op waits at a barrier for a
# descheduled sibling (a sandwich step took 6-10 s of CPU with 2 threads, 2.6 s with 1)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"

# the held-out images as a class-folder tree of links (the sweep reads class folders)
python - "$DATA" "$SPLIT" "$OUT/heldout" <<'PY'
import json, os, sys
from pathlib import Path
data, split, root = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3])
for name in json.loads(Path(split).read_text())["held_out"]:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    if not (root / name).exists():
        os.symlink(data / name, root / name)
PY

# the recipe shared by every run; the runs differ in what the widths learn
train() {
  nice -n 5 slimkern train vit_tiny_eurosat --weights "$WEIGHTS" --data "$DATA" --exclude "$SPLIT" \
    --min-width 0.1 --num-random 2 --steps 120 --batch 64 --lr 2e-4 --head-lr 2e-3 --warmup 10 \
    --checkpoint-every 20 --seed 0 --threads 1 "$@"
}
train --objective supervised --distill both --out "$OUT/train-sandwich-supervised"
# control: supervised at the full width only (plain fine-tuning), to separate the sandwich from more training
train --objective supervised --min-width 1.0 --out "$OUT/train-fullwidth-control"

sweep() {
  nice -n 5 slimkern sweep vit_tiny_eurosat --weights "$1" --data "$OUT/heldout" --dataset-name eurosat-rgb-heldout \
    --widths paper --probe both --seeds 5 --quiet --out "$2"
}
sweep "$WEIGHTS" "$OUT/sweep-original"
for run in sandwich-supervised fullwidth-control; do
  sweep "$OUT/train-$run/vit_tiny_eurosat_slimmable.safetensors" "$OUT/sweep-$run"
done
slimkern plot "$OUT"/sweep-{original,sandwich-supervised,fullwidth-control} --out "$OUT/compare" \
  --names "starting checkpoint (post hoc),sandwich + labels,full width + labels (control)"
for run in sandwich-supervised fullwidth-control; do
  python -m benchmarks.train_compare "$OUT/sweep-original" "$OUT/sweep-$run" --out "$OUT/compare/$run.md"
done
