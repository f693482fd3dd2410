"""What an exported artefact says about itself: model, weights, width, FLOPs and the input contract, as strings.

Every value is a string (ONNX ``metadata_props`` and the AOTInductor package metadata hold strings only); lists and
records are JSON. The same dictionary goes into every format, so ``read_metadata`` gives it back unchanged.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..model import SlimModel
from .inputs import InputPlan

#: Keys every artefact carries (read back by ``slimkern.export.read_metadata`` and the C++ example).
KEYS = ("format", "model", "family", "checkpoint_sha256", "weights_sha256", "width", "mode", "output", "plan",
        "flops", "relative_flops", "dtype", "batch", "inputs", "constants", "output_shape", "image_size", "bands",
        "mean", "std", "input_spec", "pooled", "provenance", "slimkern_version", "torch_version")


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over ``model.state_dict()`` (sorted names, dtypes, shapes and bytes): identifies the weights
    whether or not the checkpoint file is at hand."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_flops(model: SlimModel, width: float, mode: str, image_size: tuple[int, int], bands: int) -> int:
    """``model.flops`` of one image at ``width`` (CROMA: for the encoders that its band count selects)."""
    kwargs = {}
    if hasattr(model, "modality_of"):
        kwargs["modality"] = model.modality_of(torch.empty(1, bands, 1, 1, device="meta"))
    return model.flops(width, mode=mode, image_size=image_size, **kwargs)


def build_metadata(model: SlimModel, *, format: str, width: float, mode: str, output: str, plan: InputPlan,
                   image_size: tuple[int, int], output_shape: tuple[int, ...], checkpoint_sha256: str | None,
                   max_batch: int) -> dict[str, str]:
    """The metadata of an export of ``model`` at ``width`` (see :data:`KEYS`)."""
    from .. import __version__

    cfg, spec, bands = model.cfg, model.spec, plan.x_shape[0]
    flops = model_flops(model, width, mode, image_size, bands)
    full = model_flops(model, 1.0, mode, image_size, bands)
    meta = {
        "format": format,
        "model": cfg.name,
        "family": cfg.family,
        "checkpoint_sha256": checkpoint_sha256 or model.checkpoint_sha256 or "",
        "weights_sha256": weights_sha256(model),
        "width": repr(float(width)),
        "mode": mode,
        "output": output,
        "plan": model.plan(width, mode).summary(),
        "flops": str(flops),
        "relative_flops": f"{flops / full:.6g}",
        "dtype": str(model.dtype).removeprefix("torch."),
        "batch": f"1..{max_batch}",
        "inputs": json.dumps(plan.describe(model.dtype)),
        "constants": json.dumps(plan.constants_json()),
        "output_shape": json.dumps(["B", *output_shape]),
        "image_size": json.dumps(list(image_size)),
        "bands": json.dumps(list(spec.bands)),
        "mean": json.dumps(None if spec.mean is None else list(spec.mean)),
        "std": json.dumps(None if spec.std is None else list(spec.std)),
        "input_spec": json.dumps(spec.to_dict()),
        "pooled": cfg.pooled if output == "pooled" else "final-normed tokens, prefix tokens included",
        "provenance": json.dumps(model.provenance(width=width, mode=mode)),
        "slimkern_version": __version__,
        "torch_version": torch.__version__,
    }
    return meta
