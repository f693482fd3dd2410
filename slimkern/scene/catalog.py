"""Lists of scenes for ``slimkern embed`` and the Ray job: each scene as ``{"id": ..., "source": ...}``.

A scene argument is a raster file, a folder of per-band files, ``B04=red.tif,B03=green.tif`` (one file per
band), or a list file:

- ``.txt``: one scene per line (any of the forms above; ``#`` starts a comment);
- ``.json``: a list (or a STAC ``FeatureCollection``) whose entries are a path, ``{"id", "path"}``,
  ``{"id", "bands": {band: path}}`` or a STAC-like item ``{"id", "assets": {band: {"href": path}}}`` (assets
  whose ``href`` is a ``.tif``/``.tiff``/``.jp2`` file; the band name is the asset's ``eo:bands`` name, else its
  key).

Relative paths in a list file are relative to the list file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from .source import SceneError, common_stem

LIST_SUFFIXES = (".txt", ".json")
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")


def scene_id(source: str | dict) -> str:
    if isinstance(source, dict):
        return common_stem(source.values())
    return Path(source).name.split(".")[0]


def parse_scene(text: str, base: Path | None = None) -> dict:
    """One scene argument (a path, a folder, or ``BAND=path,BAND=path``) as ``{"id", "source"}``."""
    text = text.strip()
    if "=" in text:
        source = {}
        for part in text.split(","):
            band, sep, path = part.partition("=")
            if not sep or not band.strip() or not path.strip():
                raise SceneError(f"per-band scene {text!r}: expected BAND=path,BAND=path (e.g. B04=red.tif,B03=g.tif)")
            source[band.strip()] = _resolve(path.strip(), base)
        return {"id": scene_id(source), "source": source}
    path = _resolve(text, base)
    return {"id": scene_id(path), "source": path}


def expand_scenes(arguments: list[str]) -> list[dict]:
    """Scene arguments of the command line, list files expanded; scene ids must be unique."""
    scenes = []
    for argument in arguments:
        path = Path(argument)
        if path.suffix.lower() in LIST_SUFFIXES and "=" not in argument:
            scenes += read_scene_list(path)
        else:
            scenes.append(parse_scene(argument))
    ids = [s["id"] for s in scenes]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise SceneError(f"scene ids must be unique (they name the outputs): {', '.join(repeated)} repeat; give "
                         "list entries an 'id'")
    return scenes


def read_scene_list(path: str | Path) -> list[dict]:
    """The scenes of a ``.txt`` or ``.json`` list file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"scene list not found: {path}")
    base = path.parent
    if path.suffix.lower() == ".txt":
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        return [parse_scene(line, base) for line in lines if line]
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise SceneError(f"{path}: not valid JSON ({err})") from None
    if isinstance(entries, dict) and entries.get("type") == "FeatureCollection":
        entries = entries.get("features", [])
    if not isinstance(entries, list):
        raise SceneError(f"{path}: expected a JSON list of scenes or a STAC FeatureCollection")
    return [_entry(entry, base, f"{path}[{i}]") for i, entry in enumerate(entries)]


def _entry(entry, base: Path, where: str) -> dict:
    if isinstance(entry, str):
        return parse_scene(entry, base)
    if not isinstance(entry, dict):
        raise SceneError(f"{where}: expected a path or an object, got {type(entry).__name__}")
    if "path" in entry:
        source = _resolve(str(entry["path"]), base)
    elif "bands" in entry and isinstance(entry["bands"], dict):
        source = {str(band): _resolve(str(p), base) for band, p in entry["bands"].items()}
    elif "assets" in entry and isinstance(entry["assets"], dict):
        source = {}
        for key, asset in entry["assets"].items():
            href = asset.get("href", "") if isinstance(asset, dict) else ""
            if href.lower().endswith(RASTER_SUFFIXES):
                names = [b.get("name") for b in asset.get("eo:bands", []) if isinstance(b, dict)]
                source[names[0] if len(names) == 1 and names[0] else key] = _resolve(href, base)
        if not source:
            raise SceneError(f"{where}: no raster assets (.tif/.tiff/.jp2 hrefs) in the item")
    else:
        raise SceneError(f"{where}: a scene entry needs 'path', 'bands' {{band: path}} or STAC 'assets'")
    return {"id": str(entry.get("id") or scene_id(source)), "source": source}


def _resolve(path: str, base: Path | None) -> str:
    if base is None or "://" in path or path.startswith("/vsi") or Path(path).is_absolute():
        return path
    return str(base / path)


def output_path(template: str, scene: str, count: int) -> Path:
    """The output of ``scene``: ``template`` with ``{scene}`` filled in (needed for several scenes)."""
    if "{scene}" not in template:
        if count > 1:
            raise ValueError(f"--out {template}: several scenes need a template with {{scene}}, e.g. emb/{{scene}}.tif")
        return Path(template)
    return Path(template.replace("{scene}", scene))
