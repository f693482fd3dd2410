"""Model families, one module each; importing a family module registers its models."""

from . import (  # noqa: F401
    baselines,
    copernicus_fm,
    croma,
    dinov2,
    dofa,
    eurosat_vit,
    panopticon,
    prithvi,
    satmae,
    scalemae,
    softcon,
    ssl4eo,
    terramind,
)
