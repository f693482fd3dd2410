"""Every file the documentation points to exists: path references in the README, docs/ and csrc/README.md, and
in the docstrings of the package, the benchmarks and the examples (backtick paths into this repository like
`slimkern/model.py`, markdown links, and any mention of a design document such as ``KERNELS.md``); none reaches
outside the repository (``../shared``). Paths of other projects (``torchgeo/models/dofa.py``) and of files a
command writes are not references."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "csrc/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
CODE = sorted(p for folder in ("slimkern", "benchmarks", "examples") for p in (ROOT / folder).rglob("*.py"))
BACKTICK = re.compile(r"`([^`\s]+)`")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
DOCUMENT = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_]+\.md)\b")  # README.md, SLIMMING.md: "see FOO.md"
#: First components of the repository's own paths.
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} | {"docs", "slimkern", "tests", "csrc"}


def _without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                   ast.ClassDef)))]
    return "\n".join(filter(None, (ast.get_docstring(n) for n in nodes)))


def references(text: str) -> set[str]:
    """Paths a text points to: backtick paths into the repository (their first folder is one of its own), link
    targets, and design-document names; commands, globs, placeholders and URLs are not paths."""
    found = set()
    for ref in BACKTICK.findall(text):
        ref = ref.rstrip(".,:;)")
        if re.fullmatch(r"[\w./-]+", ref) and ref.split("/", 1)[0] in TOP:
            found.add(ref)
    found |= {ref for ref in LINK.findall(text) if not ref.startswith(("http://", "https://", "mailto:"))}
    found |= set(DOCUMENT.findall(text))
    return found


def _exists(ref: str, base: Path) -> bool:
    return (base / ref).exists() or (ROOT / ref).exists()


SOURCES = [(doc, _without_code_blocks((ROOT / doc).read_text()), (ROOT / doc).parent) for doc in DOCUMENTS]
SOURCES += [(str(p.relative_to(ROOT)), _docstrings(p), p.parent) for p in CODE]


@pytest.mark.parametrize("name, text, base", SOURCES, ids=[s[0] for s in SOURCES])
def test_every_referenced_file_exists(name, text, base):
    missing = sorted(ref for ref in references(text) if not _exists(ref, base))
    assert not missing, f"{name} points to files that do not exist: {missing}"
    assert "../shared" not in text and "shared/docs" not in text, f"{name} points outside the repository"


def test_the_reference_finder_finds_what_it_should():
    text = ("see `slimkern/model.py`, `docs/nowhere.md`, [x](docs/kernels.md#ops), SLIMMING.md section 2, "
            "`pip install x`, `torchgeo/models/dofa.py`, `runs/out/e2e.md`, [site](https://example.org/a.md)")
    assert references(text) == {"slimkern/model.py", "docs/nowhere.md", "docs/kernels.md", "SLIMMING.md"}


def test_docs_are_complete_and_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for doc in ("architecture", "slimming", "kernels", "models", "serving"):
        assert (ROOT / "docs" / f"{doc}.md").is_file()
        assert f"docs/{doc}.md" in readme


def test_readme_layout_names_every_top_level_package_folder():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[: layout.index("\n## ", 1)]
    folders = [p.name for p in (ROOT / "slimkern").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    folders += [p.name for p in (ROOT / "slimkern" / "backends").iterdir() if (p / "__init__.py").exists()]
    modules = [p.name for p in (ROOT / "slimkern").glob("*.py") if p.name != "__init__.py"]
    top = [p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name in
           ("slimkern", "csrc", "tests", "benchmarks", "examples", "docs")]
    missing = [name for name in (*folders, *modules, *top) if name.removesuffix(".py") not in layout]
    assert not missing, f"README Layout does not mention {missing}"
