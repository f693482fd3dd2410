"""slimkern: slimmable inference for remote-sensing foundation models from one stored checkpoint."""

from . import export, zoo  # noqa: F401  (zoo registers the models; export is callable: slimkern.export(...))
from .api import load
from .backends import list_backends
from .model import SlimModel, ValidationReport
from .plan import PAPER_WIDTHS, SlimPlan
from .prepare import Prepared
from .registry import list_models
from .serving import Engine
from .spec import InputSpec

__version__ = "0.1.0"

__all__ = ["PAPER_WIDTHS", "Engine", "InputSpec", "Prepared", "SlimModel", "SlimPlan", "ValidationReport", "export",
           "list_backends", "list_models", "load", "__version__"]
