"""The layering rules of docs/decisions.md ("Layers"), checked on the source so they cannot erode.

handler (functions/) -> service (usermgmt/service) -> ports (ports.py, store.py) <- adapters; only the
composition root (container.py) builds adapters and services.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "shared" / "usermgmt"
FORBIDDEN_IN_SERVICES = ("usermgmt.adapters", "usermgmt.container", "usermgmt.events", "usermgmt.api")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (TYPE_CHECKING blocks and function bodies too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path) if m.startswith(prefixes))


@pytest.mark.parametrize("path", sorted((PACKAGE / "service").glob("*.py")), ids=lambda p: p.name)
def test_services_import_no_adapter_container_or_edge(path: Path) -> None:
    assert offending(path, FORBIDDEN_IN_SERVICES) == []


def test_only_the_composition_root_imports_adapters() -> None:
    importers = [
        str(p.relative_to(ROOT))
        for p in sorted(PACKAGE.rglob("*.py"))
        if "adapters" not in p.parts and offending(p, ("usermgmt.adapters",))
    ]
    importers += [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "functions").rglob("*.py"))
        if offending(p, ("usermgmt.adapters", "usermgmt.service.writes", "usermgmt.store"))
    ]
    assert importers == ["layers/shared/usermgmt/container.py"]


def test_adapters_import_no_service() -> None:
    for path in sorted((PACKAGE / "adapters").glob("*.py")):
        assert offending(path, ("usermgmt.service", "usermgmt.container", "usermgmt.events")) == [], path.name


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    # the checker itself: an import hidden in a function under TYPE_CHECKING is still found
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from usermgmt.container import Container\n"
        "def f():\n    from usermgmt import adapters\n"
    )
    assert offending(sample, FORBIDDEN_IN_SERVICES) == [
        "usermgmt.adapters",
        "usermgmt.container",
        "usermgmt.container.Container",
    ]
