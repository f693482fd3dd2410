"""Resumable output: finished blocks are kept next to the output until the whole file can be built.

``OUT.partial/`` holds ``job.json`` (what the job is: model, weights, width, chips, scene files, ...) and one
``blocks/<row>_<col>.npz`` per finished block, each written to a temporary name, flushed to disk and renamed,
so a block file exists only when complete: the set of block files is the record of what is done. A job started
again with the same arguments skips those blocks; one with other arguments is refused (the message says what
differs) unless it has no finished block. When every block is done the output is built inside ``OUT.partial/``
and renamed to ``OUT`` in one step, so no half-written file ever carries the final name; then ``OUT.partial/``
is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np


def job_hash(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


class PartialOutput:
    """The partial state of one output file (see the module docstring)."""

    def __init__(self, out: str | Path, job: dict) -> None:
        self.out = Path(out)
        self.job = json.loads(json.dumps(job))  # as read back from job.json (tuples become lists)
        self.hash = job_hash(job)
        self.dir = self.out.with_name(self.out.name + ".partial")
        self.blocks_dir = self.dir / "blocks"

    def start(self, overwrite: bool = False) -> set[str]:
        """Prepare the partial folder; returns the names of blocks already done (empty for a new job)."""
        if self.dir.exists():
            saved = self._saved_job()
            if saved != self.job:
                if not overwrite and any(self.blocks_dir.glob("*.npz")):  # nothing finished: nothing to keep
                    differ = sorted(k for k in set(saved) | set(self.job) if saved.get(k) != self.job.get(k))
                    raise ValueError(f"{self.dir} holds an unfinished job with other settings ({', '.join(differ)} "
                                     "differ); run it again with its settings to finish it, or pass overwrite=True "
                                     "(--overwrite) to discard it")
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.blocks_dir.mkdir(parents=True)
            _write_atomic(self.dir / "job.json", json.dumps(self.job, indent=1, sort_keys=True).encode())
        for stale in self.blocks_dir.glob("*.tmp*"):  # a block being written when the last run stopped
            stale.unlink()
        return {p.stem for p in self.blocks_dir.glob("*.npz")}

    def _saved_job(self) -> dict:
        try:
            return json.loads((self.dir / "job.json").read_text())
        except (OSError, ValueError):
            return {}

    def save_block(self, name: str, **arrays: np.ndarray) -> None:
        path = self.blocks_dir / f"{name}.npz"
        tmp = path.with_name(f"{name}.npz.tmp")  # not *.npz: unfinished files never count as done
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load_block(self, name: str, *keys: str) -> dict[str, np.ndarray]:
        """The arrays of a finished block (only ``keys`` if given)."""
        with np.load(self.blocks_dir / f"{name}.npz") as data:
            return {key: data[key] for key in (keys or data.files)}

    def commit(self, build: Callable[[Path], None]) -> Path:
        """Build the output with ``build(tmp_path)`` inside the partial folder, move it into place, clean up."""
        tmp = self.dir / f"output{self.out.suffix}"
        tmp.unlink(missing_ok=True)
        build(tmp)
        os.replace(tmp, self.out)
        shutil.rmtree(self.dir)
        return self.out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
