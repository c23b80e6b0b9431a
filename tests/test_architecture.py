"""The folder tree is the architecture: these tests keep it true.

    tools ──▶ app ──▶ storage ──▶ core
                 └──▶ postgres ──┘

Imports are read from the source (every ``import`` statement, also those inside functions,
which is where the app keeps its heavy imports), so a lazy import that crosses a boundary is
caught as surely as one at the top of a module.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"
ROOMS = ("core", "storage", "postgres", "app", "tools")
MAY_IMPORT = {
    "core": {"core"},
    "storage": {"core", "storage"},
    "postgres": {"core", "postgres"},
    "app": {"core", "storage", "postgres", "app"},
    "tools": set(ROOMS),
}
CORE_THIRD_PARTY = {"polars", "numpy"}
"""What the pure core may import beyond the standard library and itself."""
IO_STDLIB = {"socket", "ssl", "http", "urllib", "ftplib", "smtplib", "subprocess", "asyncio", "sqlite3"}
ENVIRONMENT_READS = {"os.environ", "os.getenv", "os.putenv", "environ", "getenv"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) for every import statement in a file, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def targets(module: str, names: list[str]) -> list[str]:
    """The modules an import loads: ``from shared.core import layout`` loads shared.core.layout."""
    found = [module]
    for name in names:
        if source_of(f"{module}.{name}"):
            found.append(f"{module}.{name}")
    return found


def closure(start: Path) -> set[str]:
    """Every module of this repository that importing ``start`` can reach, lazily or not."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        for module, names, _ in imports_of(path):
            for target in targets(module, names):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b first
                    prefix = ".".join(parts[:i])
                    src = source_of(prefix)
                    if src is not None and prefix not in seen:
                        seen.add(prefix)
                        todo.append(src)
    return seen


def package_files() -> list[str]:
    """The files the deployment package holds: the app folder less what .funcignore names
    (gitignore patterns, which Core Tools and azd both apply)."""
    spec = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".funcignore").read_text().splitlines())
    kept = []
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = [d for d in dirs if not spec.match_file(f"{(rel / d).as_posix()}/")]
        kept.extend(p for f in files if not spec.match_file(p := (rel / f).as_posix()))
    return sorted(kept)


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "shared" and parts[1] in ROOMS else None


def pipeline_modules() -> list[Path]:
    return sorted(p for p in SHARED.rglob("*.py") if "__pycache__" not in p.parts)


# --- the deploy boundary ---------------------------------------------------------------------------


def test_the_function_app_never_imports_tools_tests_or_bench():
    reached = closure(ROOT / "function_app.py")
    assert "shared.app.triggers" in reached and "shared.core.transform" in reached, "the closure follows lazy imports"
    strays = sorted(m for m in reached if m.startswith(("shared.tools", "tests", "bench")) or m == "shared.__main__")
    assert strays == [], f"the Function App reaches code that is never deployed: {strays}"


def test_the_deployment_package_holds_no_tool_or_test_code_and_everything_the_app_imports():
    files = package_files()
    strays = [f for f in files if f.startswith(("shared/tools/", "tests/", "bench/", "scripts/", "docs/", "infra/"))]
    assert strays == [], f".funcignore lets tools or tests into the package: {strays}"
    assert "shared/__main__.py" not in files
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(files)
    needed = {source_of(m).relative_to(ROOT).as_posix() for m in closure(ROOT / "function_app.py")}  # type: ignore[union-attr]
    missing = sorted(needed - set(files))
    assert missing == [], f".funcignore leaves out modules the Function App imports: {missing}"
    assert {f for f in files if f.startswith("contracts/")}, "the contracts travel with the app"


# --- rooms ----------------------------------------------------------------------------------------------


def test_each_room_imports_only_the_rooms_downstream_of_it():
    wrong = []
    for path in pipeline_modules():
        here = room_of(module_name(path))
        if here is None:
            continue
        for module, names, line in imports_of(path):
            if module.split(".")[0] in ("tests", "bench"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            for target in targets(module, names):
                there = room_of(target)
                if there is not None and there not in MAY_IMPORT[here]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
    assert wrong == []


def test_the_core_imports_no_io_library_and_reads_no_environment():
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for path in sorted((SHARED / "core").rglob("*.py")):
        rel = path.relative_to(ROOT)
        for module, _, line in imports_of(path):
            top = module.split(".")[0]
            if top == "shared":
                continue
            if top in IO_STDLIB or (top not in stdlib and top not in CORE_THIRD_PARTY):
                wrong.append(f"{rel}:{line} imports {module}")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute | ast.Name) and ast.unparse(node) in ENVIRONMENT_READS:
                wrong.append(f"{rel}:{node.lineno} reads the environment ({ast.unparse(node)})")
    assert wrong == []


def test_every_import_of_a_pipeline_module_names_something_that_exists():
    """Lazy imports run only when their function does: a move that breaks one would surface
    as an ImportError in production, at the first file. Checked here for all of them."""
    broken = []
    for path in [ROOT / "function_app.py", *pipeline_modules(), *sorted((ROOT / "bench").glob("*.py"))]:
        for module, names, line in imports_of(path):
            if module.split(".")[0] != "shared":
                continue
            try:
                loaded = importlib.import_module(module)
            except ImportError as exc:
                broken.append(f"{path.relative_to(ROOT)}:{line}: {exc}")
                continue
            for name in names:
                if not hasattr(loaded, name) and source_of(f"{module}.{name}") is None:
                    broken.append(f"{path.relative_to(ROOT)}:{line}: {module} has no {name}")
    assert broken == []
