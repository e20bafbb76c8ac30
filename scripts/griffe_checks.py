"""griffe extensions for the API reference (mkdocs.yml loads them): reST markup rendered as Markdown, and a
warning for every public object without a docstring, which ``mkdocs build --strict`` turns into an error.

The code writes ``literal`` and :class:`Name` / :func:`~pkg.mod.name` (Sphinx roles); mkdocstrings renders
Markdown, so they are rewritten before rendering: ````x```` -> ```x```, :class:`~a.b.C` -> [`C`][a.b.C]
(an autorefs link; the strict build fails when ``a.b.C`` is not documented anywhere).

Public: griffe's ``is_public`` (listed in ``__all__`` when the module has one, else no leading underscore)
inside a public module. Re-exports are checked where they are defined; dunders, attributes and the
entry-point registration modules (``plugin``) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

logger = griffe.get_logger("griffe.attn_plugins")
ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):`(~?)([\w.]+)`")
LITERAL = re.compile(r"``([^`]+)``")
SKIPPED_MODULES = {"plugin"}


def _walk(obj: griffe.Object, seen: set[str]) -> Iterator[griffe.Object]:
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member, seen)


def _shown(pkg: griffe.Module, pages: list[str]) -> set[str]:
    """Canonical paths of the classes and functions the reference pages render (``pages``: the ``:::`` targets)."""
    shown: set[str] = set()

    def add(obj: griffe.Object) -> None:
        final = obj.final_target if obj.is_alias else obj
        if final.is_class or final.is_function:
            shown.add(final.path)
        if final.is_class:
            for name, member in final.members.items():
                if not name.startswith("_") or name == "__call__":
                    add(member)

    for page in pages:
        obj = pkg.modules_collection[page]
        if obj.is_module:
            for member in obj.members.values():
                if member.is_public and not member.is_module:
                    add(member)
        else:
            add(obj)
    return shown


class RestRoles(griffe.Extension):
    """Rewrites Sphinx roles and double-backtick literals in every docstring into Markdown.

    A role becomes a link when its target is shown in the reference (a public class or function), and code
    when it names something the pages do not show (a private helper, a module, a constant). A dotted target that names
    nothing at all is a broken reference: a warning, which fails the strict build.
    """

    def __init__(self, pages: list[str] | None = None) -> None:
        super().__init__()
        self.pages = pages or []

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of a loaded package."""
        if pkg.path != "attn_plugins":
            return
        self.shown = _shown(pkg, self.pages)
        for obj in _walk(pkg, set()):
            if obj.docstring:
                text = ROLE.sub(lambda m, o=obj: self._role(m, o, pkg), obj.docstring.value)
                obj.docstring.value = LITERAL.sub(r"`\1`", text)

    def _role(self, match: re.Match, where: griffe.Object, pkg: griffe.Module) -> str:
        tilde, target = match.group(1), match.group(2)
        shown = target.rsplit(".", 1)[-1] if tilde else target
        found = _resolve(target, where, pkg)
        if found is None:
            if target.startswith("."):
                return f"`{shown}`"  # a relative module name: text, not a link
            logger.warning(
                f"{where.relative_filepath}:{where.lineno}: {where.path} refers to {target}, which does not exist"
            )
            return f"`{shown}`"
        final = found.final_target if found.is_alias else found
        return f"[`{shown}`][{final.path}]" if final.path in self.shown else f"`{shown}`"


def _resolve(target: str, where: griffe.Object, pkg: griffe.Module) -> griffe.Object | None:
    """What a role's target names: an absolute path, or a name seen from ``where`` and its parents (as Sphinx does)."""
    scopes = [""]
    scope: griffe.Object | None = where
    while scope is not None:
        scopes.append(scope.path + ".")
        scope = scope.parent
    for prefix in scopes:
        try:
            return pkg.modules_collection[prefix + target]
        except (KeyError, ValueError, griffe.AliasResolutionError):
            continue
    return None


class MissingDocstrings(griffe.Extension):
    """Logs a warning for each public module, class, function or method that has no docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Check a loaded package."""
        self._check(pkg, set())

    def _check(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if not (obj.docstring and obj.docstring.value.strip()):
            where = f"{obj.relative_filepath}:{obj.lineno}" if obj.lineno else str(obj.relative_filepath)
            logger.warning(f"{where}: {obj.kind.value} {obj.path} has no docstring")
        for name, member in obj.members.items():
            if member.is_alias or name.startswith("__") or member.is_attribute or not member.is_public:
                continue
            if member.is_module and (name.startswith("_") or name in SKIPPED_MODULES):
                continue
            self._check(member, seen)
