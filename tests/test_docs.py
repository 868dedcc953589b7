"""The docs stay true to the tree: the layer table names every module, and nothing in the
repository points outside it for documentation."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _tracked(*patterns: str) -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", *patterns], check=True,
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [p for p in out.splitlines() if p]


def test_layer_table_names_every_module():
    table = (DOCS / "layers.md").read_text()
    named = set(re.findall(r"`([\w/.]+\.(?:py|pyi|cpp|hpp))`", table))
    modules = [p.removeprefix("python/") for p in _tracked("python/*.py", "python/*.pyi")]
    natives = _tracked("csrc/*.cpp", "csrc/*.hpp")
    missing = [m for m in modules if m not in named and m.removeprefix("tolerance/") not in named]
    missing += [c for c in natives if c not in named]
    assert not missing, f"docs/layers.md does not name: {missing}"


def test_docs_index_links_every_page():
    index = (DOCS / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"


def test_nothing_points_outside_the_repository():
    bad = []
    for rel in _tracked():
        p = REPO / rel
        if p.suffix not in (".py", ".pyi", ".md", ".cpp", ".hpp", ".txt", ".toml", ".yaml", "") \
                or not p.is_file():
            continue
        text = p.read_text(errors="replace")
        if rel != "tests/test_docs.py" and ("../shared" in text or "DESIGN.md" in text):
            bad.append(rel)
    assert not bad, f"these point outside the repository: {bad}"
