"""The service boundary rule, checked on the source: services meet only on the bus.

A module under ``services/<a>/`` (its code and its tests) imports ``blume_contracts``,
``blume_runtime``, its own package and third-party packages, never another service's
package. The CLI (``blume_share``) is the one composition root: it may import a service's
package, whose ``__init__`` is its public API, but none of the modules behind it.
``make lint`` runs this file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported}"


def service_packages(root: Path = ROOT) -> dict[str, Path]:
    """Each service's import package and the folder it lives in (``services/<name>``)."""
    return {
        package.name: service
        for service in sorted((root / "services").iterdir())
        if (service / "src").is_dir()
        for package in (service / "src").iterdir()
        if (package / "__init__.py").is_file()
    }


def imports(source: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """Every absolute import: its line, the module named, and the names taken from it."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, tuple(alias.name for alias in node.names)


def service_violations(
    source: str, path: str, own: str, packages: dict[str, Path]
) -> list[Violation]:
    """Imports of another service's package from a module of the service ``own``."""
    found = []
    for line, module, _names in imports(source):
        top = module.partition(".")[0]
        if top in packages and top != own:
            found.append(Violation(path, line, module))
    return found


def composition_root_violations(
    source: str, path: str, packages: dict[str, Path]
) -> list[Violation]:
    """Imports, from the CLI, of a module behind a service package's ``__init__``."""
    found = []
    for line, module, names in imports(source):
        top, _, rest = module.partition(".")
        if top not in packages:
            continue
        if rest:
            found.append(Violation(path, line, module))
            continue
        package_dir = packages[top] / "src" / top
        for name in names:
            if (package_dir / f"{name}.py").is_file() or (package_dir / name).is_dir():
                found.append(Violation(path, line, f"{module}.{name}"))
    return found


def _python_files(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.rglob("*.py")) if ".venv" not in path.parts)


def test_no_service_imports_another_service() -> None:
    """No module of a service, code or tests, imports another service's package."""
    packages = service_packages()
    found = [
        violation
        for own, folder in packages.items()
        for path in _python_files(folder)
        for violation in service_violations(
            path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), own, packages
        )
    ]
    assert not found, "services meet only on the bus:\n" + "\n".join(map(str, found))


def test_the_cli_uses_only_each_service_package_public_api() -> None:
    """The CLI imports service packages (their ``__init__``), never a module behind one."""
    packages = service_packages()
    found = [
        violation
        for path in _python_files(ROOT / "cli" / "src")
        for violation in composition_root_violations(
            path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), packages
        )
    ]
    assert not found, "the CLI reaches into a service:\n" + "\n".join(map(str, found))


def test_the_rules_catch_each_kind_of_reach() -> None:
    """The checks themselves flag what they exist to flag, and let the allowed through."""
    packages = service_packages()
    assert {"blume_access_gateway", "blume_share_dispatcher", "blume_publisher"} <= set(packages)
    reaching = (
        "import blume_share_dispatcher.models\n"
        "from blume_publisher.records import PatientDirectory\n"
        "from blume_link_issuer import service\n"
        "from blume_contracts.events import ShareRevoked\n"
        "import sqlmodel\n"
    )
    flagged = service_violations(reaching, "x.py", "blume_access_gateway", packages)
    assert [v.imported for v in flagged] == [
        "blume_share_dispatcher.models",
        "blume_publisher.records",
        "blume_link_issuer",
    ]
    own = "from blume_access_gateway.models import ProjectedLink\n"
    assert service_violations(own, "x.py", "blume_access_gateway", packages) == []
    cli = (
        "from blume_publisher import import_accounts\n"
        "from blume_audit_sink import retention\n"
        "from blume_share_dispatcher.models import Share\n"
        "import blume_notifier\n"
    )
    assert [v.imported for v in composition_root_violations(cli, "c.py", packages)] == [
        "blume_audit_sink.retention",
        "blume_share_dispatcher.models",
    ]
