"""The house plan in files: every package with tables has a repository guarded by its
import-linter contract and is known to the migrations; every domain has its wiring and is in
the one list the app and the worker wire."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import ordertally
from ordertally import domains

PACKAGE = Path(ordertally.__file__).parent
ROOT = PACKAGE.parent.parent


def _packages() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def _has_tables(name: str) -> bool:
    return (PACKAGE / name / "models.py").is_file()


def _has_repository(name: str) -> bool:
    return (PACKAGE / name / "repository.py").is_file() or (
        PACKAGE / name / "repository" / "__init__.py"
    ).is_file()


def test_every_package_with_tables_has_a_repository() -> None:
    # Given the packages that define tables / When their files are listed
    with_tables = [name for name in _packages() if _has_tables(name)]
    # Then each has a repository module or package, but those still pending
    missing = [n for n in with_tables if not _has_repository(n)]
    assert missing == []


def test_every_repository_is_protected_by_its_contract() -> None:
    # Given the import-linter contracts
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter", encoding="utf-8")
    protected = {
        config[section]["protected_modules"].strip()
        for section in config.sections()
        if config[section].get("type") == "protected"
    }
    # When the packages with a repository are listed
    with_repository = [name for name in _packages() if _has_repository(name)]
    # Then each repository has a contract that only its own package (and ops) imports it
    assert [n for n in with_repository if f"ordertally.{n}.repository" not in protected] == []
    for section in config.sections():
        if config[section].get("type") == "protected":
            module = config[section]["protected_modules"].strip()
            owner = module.split(".")[1]
            expected = [f"ordertally.{owner}", "ordertally.ops"]
            assert config[section]["allowed_importers"].split() == list(dict.fromkeys(expected))


def test_the_migrations_know_every_table() -> None:
    # Given the migration environment's imports
    env = (PACKAGE / "migrations" / "env.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^import ordertally\.(\w+)\.models", env, re.MULTILINE))
    # When the packages with tables are listed / Then each is imported there
    assert sorted(n for n in _packages() if _has_tables(n)) == sorted(imported)


def test_every_domain_has_its_wiring_and_is_in_the_one_list() -> None:
    # Given the packages with a wiring module
    wired = sorted(n for n in _packages() if (PACKAGE / n / "wiring.py").is_file())
    # When the domain list is read
    listed = sorted(module.__name__.split(".")[1] for module in domains.DOMAINS)
    # Then they are the same, each listed once, each with its register()
    assert wired == listed
    assert len(domains.DOMAINS) == len(set(domains.DOMAINS))
    assert all(callable(module.register) for module in domains.DOMAINS)


def test_every_domain_with_routes_has_its_errors() -> None:
    # Given the wired domains that serve routes
    with_routes = [
        module.__name__.split(".")[1]
        for module in domains.DOMAINS
        if (PACKAGE / module.__name__.split(".")[1] / "api.py").is_file()
    ]
    # When their files are listed / Then each has errors.py (its problem codes)
    assert with_routes != []
    assert [n for n in with_routes if not (PACKAGE / n / "errors.py").is_file()] == []
