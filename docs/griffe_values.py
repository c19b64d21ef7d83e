"""Griffe extension: show a parameter's default as its value, not as a constant's name.

``tile: int | None = DEFAULT_TILE`` reads better on the API pages as ``tile = 1024``.
A default (of a function, or of a class attribute such as a dataclass field) that names a module-level constant of the package (a number, a string, a
tuple of them, ``None``, ``True`` or ``False``) is replaced by the constant's value;
every other default (a call, an attribute of another package) stays as written.
Loaded by ``mkdocs.yml`` (``mkdocstrings`` handler option ``extensions``).
"""

from __future__ import annotations

import ast
from typing import Any

import griffe

_MAX_LENGTH = 40


def _literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return len(text) <= _MAX_LENGTH


class DefaultsAsValues(griffe.Extension):
    """Replace constant names in parameter defaults by the constants' literal values."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._visit(pkg, loader, set())

    def _visit(self, obj: griffe.Object, loader: griffe.GriffeLoader, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.is_function:
            for parameter in obj.parameters:
                value = self._value(parameter.default, loader)
                if value is not None:
                    parameter.default = value
        elif obj.is_attribute and obj.parent is not None and obj.parent.is_class:
            # A dataclass field: its value is the default of the generated __init__.
            value = self._value(obj.value, loader)
            if value is not None:
                obj.value = value
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, loader, seen)

    @staticmethod
    def _value(default: object, loader: griffe.GriffeLoader) -> str | None:
        if not isinstance(default, griffe.ExprName):
            return None
        try:
            target = loader.modules_collection.get_member(default.canonical_path)
        except (KeyError, ValueError, AttributeError):
            return None
        while target.is_alias:
            try:
                target = target.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        if not target.is_attribute or target.value is None:
            return None
        text = str(target.value)
        return text if _literal(text) else None
