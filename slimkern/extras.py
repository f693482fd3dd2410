"""Optional features and the pyproject extras that install them: a missing package is one line naming the
``pip install "slimkern[extra]"`` to run, said when the feature starts, not minutes into it."""

from __future__ import annotations

import importlib

#: The modules each extra provides that slimkern imports (pyproject.toml's [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "analysis": ("sklearn", "threadpoolctl", "matplotlib", "tifffile"),
    "ray": ("ray",),
    "geobench": ("geobench",),
    "train": ("lightning",),
    "scene": ("rasterio", "pyarrow", "shapely", "pyproj"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
}


class MissingExtra(ImportError):
    """An optional feature whose packages are not installed; the message names the pip install."""


def missing(extra: str, feature: str, module: str, err: ImportError | None = None) -> MissingExtra:
    """The error for ``feature`` lacking ``module`` of ``extra`` (raise it ``from None``)."""
    why = "is not installed" if err is None or isinstance(err, ModuleNotFoundError) else f"cannot be imported ({err})"
    return MissingExtra(f"{feature} needs {module!r}, which {why}: pip install \"slimkern[{extra}]\"")


def require(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Import ``modules`` (default: all of ``extra``'s) or raise :class:`MissingExtra` for ``feature``."""
    for module in EXTRAS[extra] if modules is None else modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise missing(extra, feature, module, err) from None
