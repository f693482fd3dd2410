"""Quick start: one SatMAE checkpoint served at five widths (the same as `slimkern demo`).

    python examples/quickstart.py [--weights fmow_pretrain.pth] [--batch 2]

The core of it::

    model = slimkern.load("satmae", weights=path)        # one stored copy of the weights
    p = model.prepare(pixels, bands=["R", "G", "B"], units="DN")   # [B, 3, 224, 224] 8-bit -> model input
    emb = model.run(p.x, width=0.1)                      # [B, 1024] at ~11 % of the FLOPs
    print(model.validate(p.x, width=0.1))                # error vs the float64 reference path
"""

import sys

from slimkern.demo import main

if __name__ == "__main__":
    sys.exit(main())
