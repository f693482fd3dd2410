"""Writing a benchmark's result: the JSON of its numbers and the Markdown table made from them."""

from __future__ import annotations

import json


def save(result: dict, text: str, json_path: str | None, markdown_path: str | None) -> None:
    """Write ``result`` to ``json_path`` and ``text`` to ``markdown_path``, each only where a path is given."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(text)
