"""Redundancy analysis: accuracy-vs-compute width sweeps with k-NN and linear probes, redundancy
measures, result files in the paper's layout and plots (``slimkern sweep``, ``slimkern plot``).

Needs the ``analysis`` extra (scikit-learn, threadpoolctl, matplotlib, tifffile), imported when used.

>>> from slimkern.analysis import class_folder_dataset, run_sweep       # doctest: +SKIP
>>> model = slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)           # doctest: +SKIP
>>> run_sweep(model, class_folder_dataset("eurosat_rgb"), "runs/eurosat", widths=PAPER_WIDTHS)  # doctest: +SKIP
"""

from .datasets import DataError, ImageSet, class_folder_dataset, geobench_dataset, multilabel_dataset
from .plot import plot_folders
from .sweep import run_sweep

__all__ = ["DataError", "ImageSet", "class_folder_dataset", "geobench_dataset", "multilabel_dataset",
           "plot_folders", "run_sweep"]
