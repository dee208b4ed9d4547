"""The documentation site: every public name on the API page, every page in the nav, a strict build."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import repsim

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _directives() -> list[str]:
    return re.findall(r"^::: ([\w.]+)\s*$", (DOCS / "api.md").read_text(), re.M)


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_api_page_documents_every_public_name():
    targets = {}
    for dotted in _directives():
        targets.setdefault(dotted.rpartition(".")[2], []).append(dotted)
    assert sorted(targets) == sorted(repsim.__all__)
    for name in repsim.__all__:
        (dotted,) = targets[name]
        assert _resolve(dotted) is getattr(repsim, name), dotted


def test_every_page_is_in_the_nav_and_the_guide_is_portable():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert re.search(rf":\s*{re.escape(page.name)}\s*$", nav, re.M), page.name
    guide = (DOCS / "guide.md").read_text()
    assert not re.search(r"^\s*open\s", guide, re.M), "macOS 'open' in the guide"
    assert "analyses/quickstart.toml" not in guide


def test_changelog_page_includes_the_changelog():
    assert '--8<-- "CHANGELOG.md"' in (DOCS / "changelog.md").read_text()
    assert "## 0.2.0" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    html = (site / "api" / "index.html").read_text()
    ids = set(re.findall(r'id="([^"]+)"', html))
    for dotted in _directives():
        assert dotted in ids, dotted
    assert not re.search(r":(func|class|meth|mod):<code>", html)  # roles shown as code
    assert (site / "changelog" / "index.html").read_text().count("0.2.0") >= 1
