"""MkDocs hook: show the Sphinx roles of the library's docstrings as plain code.

The docstrings write ``:func:`~module.name``` and the like, which Markdown renders as
the role's name in front of a code span. This drops the role and, as Sphinx does, shows
only the last part of a name written with ``~``.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)\.?([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    """Rewrite the roles in a page's HTML (MkDocs event)."""
    return _ROLE.sub(_code, html)
