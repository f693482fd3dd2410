"""slimkern: slimmable inference for remote-sensing foundation models from one stored checkpoint."""

from .api import load
from .backends import list_backends
from .model import SlimModel, ValidationReport
from .plan import PAPER_WIDTHS, SlimPlan
from .prepare import Prepared
from .registry import list_models
from .serving import Engine
from .spec import InputSpec

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "embed_scene":  # whole scenes to COG/GeoParquet; needs the scene extra, imported on first use
        from .scene import embed_scene

        return embed_scene
    if name == "export":  # slimkern.export(model, width, path): the package is callable; imported on first use
        import importlib

        return importlib.import_module(".export", __name__)
    raise AttributeError(f"module 'slimkern' has no attribute {name!r}")


__all__ = ["PAPER_WIDTHS", "Engine", "InputSpec", "Prepared", "SlimModel", "SlimPlan", "ValidationReport", "export",
           "list_backends", "list_models", "load", "__version__"]
