"""MkDocs hook: show the Sphinx roles of repsim's docstrings as plain code.

The docstrings use Sphinx cross-reference roles (``:func:`repsim.similarity.cka```), which
mkdocstrings renders as text followed by code. This hook drops the role and, for the
``~package.module.name`` form, keeps only the last part, as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|py:\w+):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace ``:role:<code>target</code>`` with ``<code>target</code>``."""
    return _ROLE.sub(_plain, html)
