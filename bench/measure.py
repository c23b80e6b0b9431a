"""Run a command in a child process; measure its wall time (from here) and its peak RSS (from the OS).

Peak RSS comes from the kernel's accounting of the child (``ru_maxrss``), reported by
``/usr/bin/time -f %M`` when it exists. Not ``wait4()`` of a direct child: Linux carries the
parent's high-water mark into a forked child across ``exec``, so a child of a large Python
process would report at least the parent's RSS. ``time`` is a small C program, so its child
starts clean. Without ``/usr/bin/time`` a bare Python launcher does the ``wait4()`` instead
(it adds ~10 MiB of its own to the floor of the figure; the report names the method).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TIME = "/usr/bin/time"

_LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


@dataclass
class Measured:
    wall: float  # seconds, measured by the parent around the whole child process
    peak_rss_kib: int  # ru_maxrss of the child
    returncode: int
    stdout: str
    stderr: str
    cpu: float | None = None  # user + system CPU seconds of the child (all its threads)

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def _time_works() -> bool:
    if not (os.path.exists(TIME) and os.access(TIME, os.X_OK)):
        return False
    try:
        with tempfile.NamedTemporaryFile() as rep:
            subprocess.run([TIME, "-f", "%M", "-o", rep.name, "true"], check=True, capture_output=True)
            return Path(rep.name).read_text().strip().splitlines()[-1].isdigit()
    except (OSError, subprocess.CalledProcessError, IndexError):
        return False


METHOD = "/usr/bin/time -f %M" if _time_works() else "wait4() in a bare launcher"
"""How peak RSS (and CPU time, ``%U + %S``) are read."""


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> Measured:
    with tempfile.TemporaryDirectory(prefix="bench-measure-") as tmp:
        out, err, rep = Path(tmp, "out"), Path(tmp, "err"), Path(tmp, "rss")
        if METHOD.startswith(TIME):
            cmd = [TIME, "-f", "%M %U %S", "-o", str(rep), *argv]
        else:
            cmd = [sys.executable, "-S", "-c", _LAUNCHER, str(rep), *argv]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=cwd, env=env)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            wall = time.perf_counter() - started
        report = rep.read_text().strip().splitlines() if rep.exists() else []
        # time writes "Command exited with non-zero status N" (or "terminated by signal") first
        rss, cpu = 0, None
        fields = report[-1].split() if report else []
        if len(fields) == 3 and fields[0].isdigit():
            rss = int(fields[0])
            try:
                cpu = float(fields[1]) + float(fields[2])
            except ValueError:
                cpu = None
        return Measured(wall, rss, code, out.read_text(errors="replace"), err.read_text(errors="replace"), cpu)


def have(program: str) -> bool:
    return shutil.which(program) is not None
