"""Weights by name: the files that ship with slimkern, and the official files behind ``weights="pretrained"``.

``slimkern.load(name, weights="pretrained")`` downloads the model's official file (``cfg.weights_url``) once into
the cache, verifies it against the SHA-256 pinned in the model's registration (``cfg.weights_sha256``) and keeps it
only if it matches; later loads read the cached file and need no network. A model without a pinned hash is refused
rather than loaded unverified: download its file yourself and pass ``weights=PATH``, or pass ``sha256="..."`` when
you know the file's hash. Models that ship their weights (``vit_tiny_eurosat``) load them without any download.

Environment:
- ``SLIMKERN_CACHE``: cache root (default ``~/.cache/slimkern``); files go to ``$SLIMKERN_CACHE/weights/``.
- ``SLIMKERN_WEIGHTS_MIRROR``: a base URL (``https://``, ``http://`` or ``file://``) that serves the official files
  under their own names: the file is fetched from ``$SLIMKERN_WEIGHTS_MIRROR/<file name>`` instead of the official
  location (air-gapped sites, tests). The pinned hash is checked all the same.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse
from pathlib import Path

from .provenance import file_sha256
from .registry import ModelCfg

PACKAGE_DIR = Path(__file__).resolve().parent
_SHA256 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    """Where downloaded weight files are kept: ``$SLIMKERN_CACHE/weights`` (default ``~/.cache/slimkern``)."""
    return Path(os.environ.get("SLIMKERN_CACHE") or Path.home() / ".cache" / "slimkern") / "weights"


def shipped_path(cfg: ModelCfg) -> Path | None:
    """The weight file that ships with slimkern for ``cfg`` (None for models that ship none)."""
    return PACKAGE_DIR / cfg.shipped_weights if cfg.shipped_weights else None


def official_file_name(cfg: ModelCfg) -> str:
    """The file name of ``cfg``'s official weights (the last part of its URL): its name in caches and mirrors."""
    return Path(urllib.parse.unquote(urllib.parse.urlparse(cfg.weights_url).path)).name


def pretrained_path(cfg: ModelCfg, sha256: str | None = None, *, progress: bool = True) -> Path:
    """The verified local file of ``cfg``'s official weights: shipped, cached, or downloaded now.

    Raises:
        ValueError: no official URL, no pinned SHA-256 (and none given), or a download whose hash differs.
        OSError: the file cannot be downloaded (no network, unreachable mirror).
    """
    shipped = shipped_path(cfg)
    if shipped is not None:
        return shipped
    url = cfg.weights_url
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{cfg.name} has no official weight file to download; pass weights=PATH")
    expected = (sha256 or cfg.weights_sha256).lower()
    if not expected:
        raise ValueError(f"{cfg.name}: slimkern has no pinned SHA-256 for its official file {url}, so a download "
                         "could not be verified; download it yourself and pass weights=PATH, or pass "
                         "sha256='<the file's SHA-256>' with weights='pretrained'")
    if not _SHA256.fullmatch(expected):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {expected!r}")
    name = official_file_name(cfg)
    target = cache_dir() / expected[:16] / name  # keyed by the hash: a file is only ever stored after it matched
    if target.is_file():
        return target
    mirror = os.environ.get("SLIMKERN_WEIGHTS_MIRROR")
    source = f"{mirror.rstrip('/')}/{urllib.parse.quote(name)}" if mirror else url
    target.parent.mkdir(parents=True, exist_ok=True)
    _download(source, target, expected, cfg.name, progress)
    return target


def _download(source: str, target: Path, expected: str, name: str, progress: bool) -> None:
    from torch.hub import download_url_to_file

    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    try:
        try:
            download_url_to_file(source, partial, progress=progress)
        except OSError as err:  # URLError, HTTPError, connection and disk errors
            raise OSError(f"{name}: cannot download {source} ({err}); check the network or set "
                          "SLIMKERN_WEIGHTS_MIRROR, or download the file yourself and pass weights=PATH") from None
        got = file_sha256(partial)
        if got != expected:
            raise ValueError(f"{name}: the file downloaded from {source} has SHA-256 {got}, expected {expected}; "
                             "it was not kept (a changed or damaged file, or a mirror serving another one)")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
