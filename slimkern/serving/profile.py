"""Measured latency per (batch size, width) of one model on one device, and its JSON file.

A profile is only valid for the machine, model and weights it was measured with: it carries a
fingerprint (model name, architecture, parameter checksum, dtype, backend, device name, torch version,
CPU threads; the engine adds CUDA graphs or eager) and :meth:`LatencyProfile.stale_fields` lists what no
longer matches.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import torch

from ..model import SlimModel

FORMAT_VERSION = 1


def device_name(device: torch.device) -> str:
    """A human-readable name of the device that runs the model (GPU model, or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} ({torch.get_num_threads()} threads)"


@cache
def _cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # no /proc (macOS, Windows): the platform name has to do
        pass
    return cpu


def param_checksum(model: SlimModel) -> str:
    """A cheap fingerprint of the weights: float64 sum and absolute sum over every parameter, 12 digits.

    Not a cryptographic hash (that would copy every weight to the host); it changes with any real change of
    the weights, which is what a stale latency profile needs to notice.
    """
    with torch.no_grad():
        total = sum(float(p.double().sum()) for p in model.parameters())
        absolute = sum(float(p.double().abs().sum()) for p in model.parameters())
    return f"{total:.12g}/{absolute:.12g}"


def fingerprint(model: SlimModel, *, weights: bool = True) -> dict[str, str]:
    """What a latency profile depends on. ``weights=False`` skips the parameter checksum (cheap per-request check)."""
    fp = {
        "model": model.cfg.name,
        "arch": repr(model.cfg.arch),
        "dtype": str(model.dtype).removeprefix("torch."),
        "backend": model.backend.name,
        "device": device_name(model.device),
        "torch": torch.__version__,
    }
    if weights:
        fp["params"] = param_checksum(model)
    return fp


@dataclass
class LatencyProfile:
    """Median latency in ms of ``model.run`` per batch size and width, at one image size, mode and output.

    ``latency_ms[str(batch)][str(width)]``: JSON keys are strings; :meth:`ms` takes numbers.
    """

    fingerprint: dict[str, str]
    mode: str
    output: str
    image_size: tuple[int, int]
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(int(b) for b in self.latency_ms)

    def widths(self, batch: int) -> list[float]:
        return sorted(float(w) for w in self.latency_ms[str(batch)])

    def ms(self, batch: int, width: float) -> float:
        return self.latency_ms[str(batch)][repr(float(width))]

    def record(self, batch: int, width: float, ms: float) -> None:
        self.latency_ms.setdefault(str(batch), {})[repr(float(width))] = ms

    def make_monotone(self) -> None:
        """Raise each latency to the largest of the narrower widths of its batch size (a running maximum from the
        narrowest width up). A wider width does more work, so a lower latency than a narrower width's is noise; a
        budget must never pick a width that a narrower width's measurement says would miss it."""
        for row in self.latency_ms.values():
            slowest = 0.0
            for key in sorted(row, key=float):
                slowest = max(slowest, row[key])
                row[key] = slowest

    def stale_fields(self, current: dict[str, str]) -> list[str]:
        """Fingerprint fields that differ from ``current`` (only those present in both), as readable strings."""
        return [f"{key}: profile {self.fingerprint[key]!r}, now {current[key]!r}"
                for key in sorted(set(self.fingerprint) & set(current)) if self.fingerprint[key] != current[key]]

    def save(self, path: str | os.PathLike) -> None:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyProfile:
        """Read a profile written by :meth:`save`; a file of another format raises ``ValueError``."""
        try:
            data = json.loads(Path(path).read_text())
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
            profile = cls(fingerprint=dict(data["fingerprint"]), mode=data["mode"], output=data["output"],
                          image_size=tuple(data["image_size"]), latency_ms=data["latency_ms"])
            profile.make_monotone()  # files written before profiles were made monotone
            return profile
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{os.fspath(path)!r} is not a slimkern latency profile ({err}); "
                             "write one with Engine.profile() and Engine.save_profile(path)") from None
