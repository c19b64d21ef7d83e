"""MkDocs hook: show the Sphinx roles of the library's docstrings as plain code.

The docstrings write ``:func:`~module.name``` and the like, which Markdown renders as
the role's name in front of a code span. This drops the role and, as Sphinx does, shows
only the last part of a name written with ``~``.

It also lets the dotted names of the API headings (``qgac_transforms.pillow_plugin``)
wrap after a dot on a narrow screen rather than inside a word.
"""

from __future__ import annotations

import re

_HEADING_NAME = re.compile(r'(<span class="doc doc-object-name[^"]*">)([^<]*)(</span>)')
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)\.?([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    """Rewrite the roles in a page's HTML (MkDocs event)."""
    html = _ROLE.sub(_code, html)
    return _HEADING_NAME.sub(lambda m: m[1] + m[2].replace(".", ".<wbr>") + m[3], html)
