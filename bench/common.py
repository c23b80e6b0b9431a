"""What every benchmark shares: paths, the cached input files, the machine's description, JSON."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data" / "bench"  # git-ignored (.data/)
WORK_DIR = DATA_DIR / "work"
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DEFAULT_SEED = 7
MIB = 1024 * 1024


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_rows(text: str) -> list[int]:
    """``1000000,10M,5e7`` -> [1000000, 10000000, 50000000]."""
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        scale = 1
        if part[-1] in "km":
            scale = {"k": 1_000, "m": 1_000_000}[part[-1]]
            part = part[:-1]
        out.append(int(float(part) * scale))
    return out


def rows_label(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


def generator_fingerprint() -> str:
    """A short hash of the bank generator's code and constants: a changed generator means new files
    (the module's other generators can change without invalidating 2 GB of cached input)."""
    import inspect

    from shared.tools import samples

    parts = [repr((samples.DOMAINS, samples.CITIES, samples.BATCH_ROWS))]
    for name, obj in sorted(vars(samples).items()):
        if inspect.isfunction(obj) and "bank" in name:
            parts.append(inspect.getsource(obj))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]


def dataset(rows: int, seed: int = DEFAULT_SEED, directory: Path = DATA_DIR) -> Path:
    """The seed-shaped input of ``rows`` rows, generated once and reused (deterministic)."""
    from shared.tools import samples

    path = directory / f"bank_transactions-{rows}-s{seed}-{generator_fingerprint()}.csv"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    log(f"generating {rows:,} rows (seed {seed}) into {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ...")
    started = time.perf_counter()
    samples.bank_transactions(partial, rows, seed=seed)
    os.replace(partial, path)
    log(f"  {path.stat().st_size / 1e6:,.1f} MB in {time.perf_counter() - started:.1f} s")
    return path


def warm_cache(path: Path) -> float:
    """Read a file once so that every contender starts with it in the page cache."""
    started = time.perf_counter()
    with open(path, "rb") as fh:
        while fh.read(16 * MIB):
            pass
    return time.perf_counter() - started


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), idle


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all cores busy over ``seconds`` (while this harness itself waits), or None off Linux."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def settle(max_wait: float, quiet: float = 0.15) -> float | None:
    """Wait (up to ``max_wait`` s) until other work uses less than ``quiet`` of the cores; return the
    last measured share, so the report can say how busy the machine was when a run started."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy is not None and busy >= quiet and time.monotonic() < deadline:
        time.sleep(2)
        busy = cpu_busy()
    return busy


def tree_bytes(path: Path, exclude: Path | None = None) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink() and (exclude is None or p != exclude):
            total += p.stat().st_size
    return total


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / MIB, 1)
    except OSError:
        pass
    return None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "shared", "function_app.py", "contracts"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (shared/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def code_fingerprint() -> str:
    """A hash of the code under test as it is on disk now (shared/, function_app.py, contracts/):
    other engineers edit the same working tree, so a run records what it measured."""
    digest = hashlib.sha256()
    files = [*sorted((ROOT / "shared").rglob("*.py")), ROOT / "function_app.py", *sorted((ROOT / "contracts").glob("*.toml"))]
    for path in files:
        if path.exists():
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("polars", "duckdb", "pandas", "pyarrow", "psycopg", "azure-storage-blob")},
    }


def stamp() -> dict[str, Any]:
    """When, where and on what code a result was measured."""
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "code": code_fingerprint(),
        "machine": machine(),
    }


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values)) if values else float("nan")
