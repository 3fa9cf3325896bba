"""ARCHITECTURE.md's layering, checked by reading the source (no imports, no database).

- services and repositories never commit: the request (or job, or CLI command) owns the transaction;
- ``HTTPException`` belongs to routers and ``mercato.web`` only: services raise domain errors;
- a domain may call another domain's service, never its repository.

Each checker is also run on a small violating snippet, so a rule that stopped catching anything fails here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import mercato

SRC = Path(mercato.__file__).resolve().parent
NOT_DOMAINS = frozenset({"db", "web", "platform"})


@dataclass(frozen=True)
class Violation:
    line: int
    what: str


# --- the checkers -----------------------------------------------------------------------------------------


def commit_calls(source: str) -> list[Violation]:
    """Every call of a method named ``commit`` (``session.commit()``, ``await conn.commit()``, ...)."""
    return [
        Violation(node.lineno, "calls .commit()")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit"
    ]


def http_exception_references(source: str) -> list[Violation]:
    """Every mention of ``HTTPException`` as a name, an attribute (``fastapi.HTTPException``) or an import."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            (isinstance(node, ast.Name) and node.id == "HTTPException")
            or (isinstance(node, ast.Attribute) and node.attr == "HTTPException")
            or (isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] == "HTTPException")
        ):
            found.append(Violation(getattr(node, "lineno", 0), "references HTTPException"))
    return found


def _imported_modules(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Absolute names of every module (or module attribute) an import statement may bring in."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def _is_repository(name: str) -> bool:
    return name == "repository" or name.endswith("_repository")


def foreign_repository_imports(
    source: str, module: str, domains: frozenset[str], *, is_package: bool = False
) -> list[Violation]:
    """Imports, in ``module`` (e.g. ``mercato.orders.service``), of another domain's repository module."""
    parts = module.split(".")
    own = parts[1] if len(parts) > 1 else None
    found = []
    for line, name in _imported_modules(ast.parse(source), module, is_package):
        target = name.split(".")
        if (
            len(target) >= 3
            and target[0] == "mercato"
            and target[1] in domains
            and target[1] != own
            and _is_repository(target[2])
        ):
            violation = Violation(line, f"imports {'.'.join(target[:3])}")
            if violation not in found:
                found.append(violation)
    return found


# --- which files each rule applies to ----------------------------------------------------------------------


def is_service_or_repository(path: Path) -> bool:
    return path.name in {"service.py", "repository.py"} or path.name.endswith("_service.py")


def may_use_http_exception(path: Path) -> bool:
    rel = path.relative_to(SRC)
    return rel.parts[0] == "web" or path.name == "router.py" or path.name.endswith("_router.py")


def domain_packages() -> frozenset[str]:
    return frozenset(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file() and p.name not in NOT_DOMAINS)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ["mercato", *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.relative_to(SRC).parts)


def _report(found: dict[Path, list[Violation]]) -> list[str]:
    return [f"{path.relative_to(SRC.parent)}:{v.line}: {v.what}" for path, vs in found.items() for v in vs]


# --- the rules, applied to the code base -------------------------------------------------------------------


def test_the_scan_sees_the_code_base() -> None:
    files = source_files()
    assert SRC / "identity" / "service.py" in files
    assert {"identity", "audit"} <= domain_packages()
    assert not NOT_DOMAINS & domain_packages()
    assert any(is_service_or_repository(p) for p in files)


def test_services_and_repositories_never_commit() -> None:
    found = {p: commit_calls(p.read_text()) for p in source_files() if is_service_or_repository(p)}
    assert _report(found) == []


def test_http_exception_only_in_routers_and_web() -> None:
    found = {p: http_exception_references(p.read_text()) for p in source_files() if not may_use_http_exception(p)}
    assert _report(found) == []


def test_no_domain_imports_another_domains_repository() -> None:
    domains = domain_packages()
    found = {
        p: foreign_repository_imports(p.read_text(), module_name(p), domains, is_package=p.name == "__init__.py")
        for p in source_files()
        if p.relative_to(SRC).parts[0] in domains
    }
    assert _report(found) == []


# --- the checkers catch violations (and only violations) ---------------------------------------------------


@pytest.mark.parametrize(
    "snippet",
    [
        "async def place(session):\n    await session.commit()\n",
        "def f(s):\n    s.commit()\n",
        "async def f(db):\n    async with db.begin() as conn:\n        await conn.commit()\n",
    ],
)
def test_commit_checker_flags_commits(snippet: str) -> None:
    assert commit_calls(snippet) == [Violation(len(snippet.splitlines()), "calls .commit()")]


@pytest.mark.parametrize(
    "snippet",
    [
        "async def f(session):\n    await session.flush()\n",
        "def f(session, cb):\n    after_commit(session, cb)\n",
        "# do not session.commit() here\nx = 'session.commit()'\n",
        "def f(s):\n    return s.commit\n",
    ],
)
def test_commit_checker_ignores_non_commits(snippet: str) -> None:
    assert commit_calls(snippet) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from fastapi import HTTPException\n",
        "from starlette.exceptions import HTTPException as Boom\n",
        "import fastapi\n\ndef f():\n    raise fastapi.HTTPException(404)\n",
        "def f(exc):\n    return isinstance(exc, HTTPException)\n",
    ],
)
def test_http_exception_checker_flags_references(snippet: str) -> None:
    assert http_exception_references(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "from mercato.errors import NotFound\n\ndef f():\n    raise NotFound('x')\n",
        "# never raise HTTPException here\nDOC = 'HTTPException is for routers'\n",
    ],
)
def test_http_exception_checker_ignores_other_code(snippet: str) -> None:
    assert http_exception_references(snippet) == []


DOMAINS = frozenset({"orders", "inventory", "identity"})


@pytest.mark.parametrize(
    "snippet",
    [
        "from mercato.inventory import repository\n",
        "from mercato.inventory import repository as inventory_repository\n",
        "from mercato.inventory.repository import reserve\n",
        "import mercato.inventory.repository\n",
        "from ..inventory import repository\n",
        "from ..inventory.repository import reserve\n",
        "from mercato.identity import service, repository\n",
        "def f():\n    from mercato.inventory import stock_repository\n",
    ],
)
def test_repository_checker_flags_foreign_repositories(snippet: str) -> None:
    assert foreign_repository_imports(snippet, "mercato.orders.service", DOMAINS) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "from mercato.orders import repository\n",
        "from . import repository\n",
        "from .repository import order_by_id\n",
        "from mercato.inventory import service as inventory_service\n",
        "from mercato.db import repository\n",  # not a domain
        "from mercato.inventory.models import Stock\n",
        "import mercato.inventory\n",
    ],
)
def test_repository_checker_allows_own_repository_and_services(snippet: str) -> None:
    assert foreign_repository_imports(snippet, "mercato.orders.service", DOMAINS) == []


def test_repository_checker_resolves_relative_imports_from_a_package_init() -> None:
    assert foreign_repository_imports("from .repository import x\n", "mercato.orders", DOMAINS, is_package=True) == []
    assert foreign_repository_imports(
        "from ...inventory.repository import x\n", "mercato.orders.sub", DOMAINS, is_package=True
    ) == [Violation(1, "imports mercato.inventory.repository")]


def test_rules_apply_to_the_right_files() -> None:
    assert is_service_or_repository(SRC / "orders" / "service.py")
    assert is_service_or_repository(SRC / "identity" / "users_service.py")
    assert is_service_or_repository(SRC / "orders" / "repository.py")
    assert not is_service_or_repository(SRC / "platform" / "jobs.py")
    assert may_use_http_exception(SRC / "identity" / "router.py")
    assert may_use_http_exception(SRC / "identity" / "oidc_router.py")
    assert may_use_http_exception(SRC / "web" / "middleware.py")
    assert not may_use_http_exception(SRC / "identity" / "service.py")
    assert not may_use_http_exception(SRC / "app.py")
    assert module_name(SRC / "identity" / "service.py") == "mercato.identity.service"
    assert module_name(SRC / "identity" / "__init__.py") == "mercato.identity"
