"""The README as a user meets it on a fresh clone (issue 13 item 11).

Convention (also in a comment at the top of README.md):
- every ```python block runs, in order, in one shared namespace, from the repository root;
- a ```python block whose first line starts with ``# needs:`` (a visible marker saying which file the reader must
  bring, e.g. ``# needs: fmow_pretrain.pth``) is skipped, with that line as the reason;
- every line of a ```bash block that starts with ``slimkern`` must parse with the CLI (``[...]`` marks optional
  arguments, a trailing backslash continues the line); no block is run as a shell command;
- no path into the development workspace (``../shared``), no link to a document the repository lacks, and an
  official-checkpoint row for every model.
"""

import re
import shlex
from pathlib import Path

import pytest

from slimkern.cli import build_parser
from slimkern.registry import get_cfg, list_models

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SKIP_MARKER = "# needs:"
BLOCKS = [(README.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
          for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)]
PYTHON = [(line, code) for line, lang, code in BLOCKS if lang == "python"]
COMMANDS = [(line + i + 1, text.strip()) for line, lang, code in BLOCKS if lang == "bash"
            for i, text in enumerate(code.replace("\\\n", " ").splitlines()) if text.strip().startswith("slimkern ")]


@pytest.fixture(scope="module")
def namespace():
    return {"__name__": "__readme__"}


@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"README.md:{line}" for line, _ in PYTHON])
def test_python_block_runs(line, code, namespace, monkeypatch):
    first = code.lstrip().splitlines()[0]
    if first.startswith(SKIP_MARKER):
        pytest.skip(f"README.md:{line} {first}")
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"README.md:{line}", "exec"), namespace)


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[f"README.md:{line}" for line, _ in COMMANDS])
def test_command_line_parses(line, command):
    text = command.split("  #", 1)[0].replace("[", "").replace("]", "")
    try:
        build_parser().parse_args(shlex.split(text)[1:])
    except SystemExit as exit_:  # --version and --help exit 0; a bad option exits 2
        assert exit_.code == 0, f"README.md:{line}: {command!r} does not parse"


def test_there_is_something_to_run():
    assert len(PYTHON) >= 2 and not PYTHON[0][1].startswith(SKIP_MARKER) and len(COMMANDS) >= 10


def test_no_paths_into_the_development_workspace():
    assert "../shared" not in README


def test_documents_named_in_readme_and_docstrings_exist():
    tops = [top for top in ROOT.iterdir() if not top.name.startswith(".")]  # not .venv or .git
    files = {p.name for top in tops for p in ([top] if top.is_file() else top.rglob("*.md"))}
    sources = [ROOT / "README.md", *(ROOT / "slimkern").rglob("*.py")]
    missing = {f"{path.relative_to(ROOT)}: {name}" for path in sources
               for name in re.findall(r"\b[\w-]+\.md\b", path.read_text()) if name not in files}
    assert not missing, sorted(missing)


def test_every_model_has_its_official_checkpoint_in_the_readme():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.+?) \|", README, flags=re.M)}
    for name in sorted({get_cfg(n).name for n in list_models()}):
        cfg = get_cfg(name)
        expected = f"slimkern/{cfg.shipped_weights}" if cfg.shipped_weights else f"<{cfg.weights_url}>"
        assert expected in rows.get(name, ""), (name, rows.get(name))
