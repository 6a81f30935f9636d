"""
Reading the package's layout from its source, for the tests that hold it:
module names, and every import of the package a module makes (at the top,
inside functions and under C{TYPE_CHECKING} alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

#: The checkout's root, and the package in it.
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "txgraphsse"


def module_name(path: Path) -> str:
    """
    The dotted name of the module at C{path}, below L{ROOT}.
    """
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """
    Whether C{name} is a module (or package) of the checkout.
    """
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def package_imports(path: Path) -> set[str]:
    """
    Every module of txgraphsse that C{path} imports, anywhere in it: at the
    top, inside functions and under C{TYPE_CHECKING} alike.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("txgraphsse"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target != "txgraphsse" and not target.startswith("txgraphsse."):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if is_module(sub) else target)
    found.discard(name)
    return found


def package_modules() -> list[Path]:
    """
    Every module of the package, in order.
    """
    return sorted(PACKAGE.rglob("*.py"))
