#!/usr/bin/env bash
# How the recipe of benchmarks/train_eurosat.sh was chosen (issue 18), without touching the 1,000 held-out
# images: a stratified validation split of 800 of the 4,000 training images (80 per class) is held out as well,
# every candidate recipe trains on the remaining 3,200 and is scored on the 800 (k-NN and linear probe, widths
# 1, 0.5, 0.25, 0.1, 0.05, seeds 0-4) against the starting checkpoint.
#
#   bash benchmarks/train_eurosat_validation.sh [DATA=../shared/data/eurosat_rgb] [OUT=runs/train-eurosat-val]
#
# Results of 2026-12-05: benchmarks/results/cpu-amd-epyc-2threads-2026-12-05-train-eurosat/validation/.
set -euo pipefail
DATA=${DATA:-../shared/data/eurosat_rgb}
OUT=${OUT:-runs/train-eurosat-val}
SPLIT=slimkern/data/weights/vit_tiny_eurosat_split.json
WEIGHTS=slimkern/data/weights/vit_tiny_eurosat.safetensors
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # see train_eurosat.sh
mkdir -p "$OUT"

# the validation split (80 training images per class, numpy default_rng(18)), the exclude list (held-out +
# validation) and the validation images as a class-folder tree of links
python - "$DATA" "$SPLIT" "$OUT" <<'PY'
import json, os, sys
from pathlib import Path
import numpy as np
data, split, out = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3])
held = set(json.loads(Path(split).read_text())["held_out"])
val = []
for cls in sorted(p.name for p in data.iterdir() if p.is_dir()):
    train = sorted(f"{cls}/{f.name}" for f in (data / cls).iterdir() if f.is_file() and not f.name.startswith("."))
    val += sorted(np.random.default_rng(18).permutation([f for f in train if f not in held])[:80].tolist())
(out / "val_split.json").write_text(json.dumps({"seed": 18, "per_class": 80, "validation": val}, indent=0))
(out / "exclude_heldout_and_val.json").write_text(json.dumps(sorted(held | set(val))))
for name in val:
    (out / "val" / name).parent.mkdir(parents=True, exist_ok=True)
    if not (out / "val" / name).exists():
        os.symlink(data / name, out / "val" / name)
PY

sweep() {
  nice -n 5 slimkern sweep vit_tiny_eurosat --weights "$1" --data "$OUT/val" --dataset-name eurosat-rgb-val800 \
    --widths 1,0.5,0.25,0.1,0.05 --probe both --seeds 5 --quiet --no-plot --out "$2"
}
sweep "$WEIGHTS" "$OUT/sweep-original"

# every recipe tried, in order; they share the previous run's optimisation and differ in the losses or seed
RECIPES=(
  "v0-previous|--distill both"
  "v1-anchor|--distill both --anchor 1 --full-weight 3"
  "v2-anchor-from-original|--distill embedding --distill-from original --anchor 1 --full-weight 3"
  "v3-anchor-lr1e-4|--distill both --anchor 1 --full-weight 3 --lr 1e-4"
  "v4-anchor3|--distill both --anchor 3 --full-weight 3"
  "v5-anchor-seed1|--distill both --anchor 1 --full-weight 3 --seed 1"
  "v6-anchor3-seed1|--distill both --anchor 3 --full-weight 3 --seed 1"
  "v7-anchor-seed2|--distill both --anchor 1 --full-weight 3 --seed 2"
)
for recipe in "${RECIPES[@]}"; do
  name=${recipe%%|*}
  # shellcheck disable=SC2086  # the options are word-split on purpose
  nice -n 5 slimkern train vit_tiny_eurosat --weights "$WEIGHTS" --data "$DATA" \
    --exclude "$OUT/exclude_heldout_and_val.json" --objective supervised --min-width 0.1 --num-random 2 \
    --steps 120 --batch 64 --lr 2e-4 --head-lr 2e-3 --warmup 10 --checkpoint-every 40 --seed 0 --threads 1 \
    ${recipe#*|} --out "$OUT/train-$name"
  sweep "$OUT/train-$name/vit_tiny_eurosat_slimmable.safetensors" "$OUT/sweep-$name"
  python -m benchmarks.train_compare "$OUT/sweep-original" "$OUT/sweep-$name" --widths 1,0.5,0.25,0.1,0.05 \
    --out "$OUT/compare-$name.md"
done
