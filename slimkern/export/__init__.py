"""Deploying one width: a dense artefact of exactly the slimmed shapes (torch.export ``pt2``, ONNX, AOTInductor),
verified against :meth:`SlimModel.run` in its own runtime. ``slimkern.export(model, width, path, ...)`` calls
:func:`~slimkern.export.exporter.export`; see the README section "Deploying one width"."""

import sys
import types

from .exporter import MAX_BATCH, ExportError, ExportResult, VerificationError, export
from .formats import FORMATS, REFUSED, MissingExtraError, load_runtime, read_metadata

__all__ = ["FORMATS", "MAX_BATCH", "REFUSED", "ExportError", "ExportResult", "MissingExtraError", "VerificationError",
           "export", "load_runtime", "read_metadata"]


class _CallablePackage(types.ModuleType):
    """``slimkern.export`` is both this package and the function (as the README shows it), so that
    ``slimkern.export(model, 0.1, "m.onnx")`` and ``import slimkern.export.formats`` both work."""

    def __call__(self, *args, **kwargs) -> ExportResult:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
