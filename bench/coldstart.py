"""Cold start: how long a fresh Python process takes to ``import function_app`` (what the worker
does before the first invocation), against the bare interpreter. Each sample is a new process."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from bench import common, measure

COMMANDS = {
    "bare": ("python -c pass", "pass"),
    "function_app": ("python -c 'import function_app'", "import function_app"),
}


def importtime(top: int = 10, runs: int = 3) -> list[dict[str, Any]]:
    """The heaviest imports under ``import function_app`` by cumulative time (``-X importtime``, the
    fastest of ``runs`` runs per module), with their depth in the import tree."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import function_app"],
            cwd=common.ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        seen = set()
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if not m or m.group(4) in seen:
                continue
            seen.add(m.group(4))
            row = {"module": m.group(4), "ms": int(m.group(2)) / 1000, "depth": len(m.group(3)) // 2}
            if row["module"] not in best or row["ms"] < best[row["module"]]["ms"]:
                best[row["module"]] = row
    rows = sorted(best.values(), key=lambda r: -r["ms"])
    return rows[:top]


def bench(repeat: int) -> dict[str, Any]:
    samples: dict[str, list[measure.Measured]] = {k: [] for k in COMMANDS}
    for i in range(repeat + 1):  # one extra round first, unrecorded: byte-compiles and warms the page cache
        for key, (_, code) in COMMANDS.items():
            m = measure.run([sys.executable, "-c", code], cwd=common.ROOT)
            if m.returncode != 0:
                raise RuntimeError(f"{code!r} failed: {m.stderr[-2000:]}")
            if i:
                samples[key].append(m)
    commands = {}
    for key, (label, _) in COMMANDS.items():
        walls = [m.wall for m in samples[key]]
        commands[key] = {
            "command": label,
            "wall": common.median(walls),
            "min": min(walls),
            "max": max(walls),
            "peak_rss_mib": common.median([m.peak_rss_mib for m in samples[key]]),
            "samples": walls,
        }
    doc = {
        "kind": "coldstart",
        "repeat": repeat,
        "commands": commands,
        "import_time": importtime(),
        "notes": [
            "Warm page cache and compiled bytecode (one unrecorded round first): the Functions host's worker start "
            "and the package mount come on top in Azure",
            f"`import function_app` costs {commands['function_app']['wall'] - commands['bare']['wall']:.3f} s over the "
            "bare interpreter",
        ],
        **common.stamp(),
    }
    common.log(
        f"cold start: bare {commands['bare']['wall']:.3f} s, import function_app {commands['function_app']['wall']:.3f} s "
        f"({commands['function_app']['peak_rss_mib']:.0f} MiB)"
    )
    return doc
