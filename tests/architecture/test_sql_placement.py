"""SQL is built in repository modules only: every module of the package is parsed, and any use
of a SQLAlchemy statement constructor outside `*/repository.py`, a `*/repository/` package,
`*/models.py`, `core/db.py` and `migrations/` is an offence, reported as file:line."""

from __future__ import annotations

import ast
from pathlib import Path

import ordertally

PACKAGE = Path(ordertally.__file__).parent

# The names that build SQL statements or clauses.
CONSTRUCTORS = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "text",
        "func",
        "and_",
        "or_",
        "not_",
        "case",
        "literal",
        "literal_column",
        "bindparam",
        "exists",
        "union",
        "union_all",
        "tuple_",
        "null",
        "true",
        "false",
        "column",
        "table",
        "values",
        "cast",
        "over",
        "distinct",
    }
)

# ordertally's own statement builders, from core/db.py: a dialect's INSERT ... ON CONFLICT, and
# the Core table of a model (what statements are built on).
OWN_CONSTRUCTORS = frozenset({"upsert_insert", "table_of"})

# Infrastructure that builds SQL for a reason of its own: the module, the constructors it may
# use, and why. Nothing else.
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "app.py": (frozenset({"text"}), "warm-up: SELECT 1 opens pool connections before traffic"),
    "ops/health.py": (frozenset({"text"}), "readiness probe: SELECT 1"),
    "ops/migration_check.py": (
        frozenset({"text"}),
        "creates and drops the scratch PostgreSQL database the migrations are checked on",
    ),
    "exports/templates/base.py": (
        frozenset({"case", "cast", "func", "literal", "or_"}),
        "a column's CSV cell and SpreadsheetML cell as PostgreSQL expressions (ADR 0036 "
        "addendum, ADR 0041): clauses over the columns a template reads, never a statement; "
        "exports/repository.py builds the COPY",
    ),
}


def _sql_home(relative: str) -> bool:
    parts = relative.split("/")
    return (
        parts[-1] in ("repository.py", "models.py")
        or "repository" in parts[:-1]
        or relative == "core/db.py"
        or parts[0] == "migrations"
    )


def offences(source: str) -> list[tuple[int, str, str]]:
    """(line, constructor, code) for every SQL statement constructor a module imports or uses:
    SQLAlchemy's (also through a module alias, `sa.select`), a dialect's `insert`, and
    core/db.py's `upsert_insert` and `table_of`."""
    tree = ast.parse(source)
    found: set[tuple[int, str, str]] = set()
    modules: set[str] = set()  # local names bound to sqlalchemy or one of its submodules
    names: dict[str, str] = {}  # local name -> the constructor it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            from_sqlalchemy = node.module.split(".")[0] == "sqlalchemy"
            dialect = node.module.startswith("sqlalchemy.dialects.")
            for alias in node.names:
                local = alias.asname or alias.name
                if (
                    (from_sqlalchemy and alias.name in CONSTRUCTORS)
                    or (dialect and alias.name == "insert")
                    or (node.module == "ordertally.core.db" and alias.name in OWN_CONSTRUCTORS)
                ):
                    names[local] = alias.name
                    found.add((node.lineno, alias.name, f"from {node.module} import {alias.name}"))
                elif from_sqlalchemy and alias.name in ("sql", "dialects", "postgresql", "sqlite"):
                    modules.add(local)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    modules.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
            found.add((node.lineno, names[node.id], node.id))
        elif isinstance(node, ast.Attribute) and node.attr in CONSTRUCTORS:
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.add((node.lineno, node.attr, ast.unparse(node)))
    return sorted(found)


def _scan() -> dict[str, list[tuple[int, str, str]]]:
    result: dict[str, list[tuple[int, str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if _sql_home(relative):
            continue
        allowed = ALLOWED.get(relative, (frozenset(), ""))[0]
        found = [o for o in offences(path.read_text(encoding="utf-8")) if o[1] not in allowed]
        if found:
            result[relative] = found
    return result


def test_the_detector_sees_imports_attributes_and_dialect_inserts() -> None:
    # Given a module that builds SQL in each of the ways the rule covers, and one that only
    # annotates with a session
    source = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy import select, String\n"
        "from sqlalchemy.dialects.postgresql import insert as pg_insert\n"
        "from sqlalchemy.ext.asyncio import AsyncSession\n"
        "q = sa.func.count()\n"
        "s = select(String)\n"
        "i = pg_insert\n"
        "from ordertally.core.db import upsert_insert\n"
        "u = upsert_insert(None, None)\n"
    )
    clean = "from sqlalchemy.ext.asyncio import AsyncSession\nfrom sqlalchemy import String\n"
    # When each is checked / Then every construction is reported with its line, nothing else
    assert offences(source) == [
        (2, "select", "from sqlalchemy import select"),
        (3, "insert", "from sqlalchemy.dialects.postgresql import insert"),
        (5, "func", "sa.func"),
        (6, "select", "select"),
        (7, "insert", "pg_insert"),
        (8, "upsert_insert", "from ordertally.core.db import upsert_insert"),
        (9, "upsert_insert", "upsert_insert"),
    ]
    assert offences(clean) == []


def test_sql_is_built_only_in_repository_modules() -> None:
    # Given every module of the package / When each is parsed
    found = _scan()
    # Then none outside the SQL homes builds SQL
    unexpected = [
        f"src/ordertally/{name}:{line}: {code}"
        for name, items in found.items()
        for line, _, code in items
    ]
    assert not unexpected, "SQL built outside a repository:\n" + "\n".join(unexpected)


def test_every_allowed_module_exists_and_builds_sql() -> None:
    # Given the allow-list / When each entry is parsed
    for name, (constructors, reason) in ALLOWED.items():
        path = PACKAGE / name
        assert path.is_file(), f"{name} ({reason}) does not exist"
        used = {o[1] for o in offences(path.read_text(encoding="utf-8"))}
        # Then it exists and uses every constructor it is allowed (else the entry goes)
        assert constructors <= used, f"{name} no longer uses {sorted(constructors - used)}"
