"""The transform benchmark: every contender on the same file, each in its own process, interleaved.

Per size: generate (or reuse) the input, then ``repeat`` rounds. A round reads the input once
(so every contender starts with a warm page cache), then runs each contender once, in an order
rotated by one every round (A B C D, B C D A, ...), so that drift in the machine's load hits all
alike. Each run gets a fresh output folder, prepared before the clock starts and flushed to
disk (``sync``) after the clock stops, so that one contender's write-back does not land in
the next one's time. Every run's aggregates are checked against the first contender's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import common, compare, contenders, measure

DEFAULT_ORDER = ("pipeline", "polars_obvious", "polars_categorical", "duckdb", "duckdb_256mb", "pandas", "polars_count")


def select(names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The contenders that can run here, and why the others cannot."""
    skipped: dict[str, str] = {}
    chosen = []
    for name in names or DEFAULT_ORDER:
        if name not in contenders.CONTENDERS:
            raise SystemExit(f"unknown contender {name!r}; known: {', '.join(contenders.CONTENDERS)}")
        why = contenders.available(name)
        if why:
            skipped[name] = why
        else:
            chosen.append(name)
    return chosen, skipped


def run_once(
    name: str, input_path: Path, outdir: Path, timeout: float | None = None, settle: float | None = None
) -> dict[str, Any]:
    """One measured run of one contender. Returns the run's record (aggregates left in outdir).

    ``settle``: wait up to that many seconds for other work on the machine to calm down first."""
    shutil.rmtree(outdir, ignore_errors=True)
    contenders.prepare(name, input_path, outdir)
    os.sync()
    busy = common.settle(settle) if settle is not None else None
    code = common.code_fingerprint() if name == "pipeline" else None
    m = measure.run(
        [sys.executable, "-m", "bench.contenders", name, str(input_path), str(outdir)],
        cwd=common.ROOT,
        env=os.environ | {"PYTHONPATH": str(common.ROOT)},
        timeout=timeout,
    )
    record: dict[str, Any] = {
        "wall": m.wall,
        "cpu": m.cpu,
        "peak_rss_mib": m.peak_rss_mib,
        "returncode": m.returncode,
        "busy_before": busy,
    }
    if code:
        record["code"] = code
    if m.returncode != 0:
        tail = "\n".join(m.stderr.strip().splitlines()[-12:])
        record["error"] = tail or f"exit status {m.returncode}"
        return record
    try:
        info = json.loads(m.last_line)
    except json.JSONDecodeError:
        record["error"] = f"no result line on stdout: {m.stdout[-500:]!r}"
        return record
    record["work_seconds"] = info.pop("work_seconds", None)
    memory = info.pop("memory_mib", None) or {}
    record["peak_anon_mib"] = memory.get("RssAnon")
    record["peak_file_mib"] = memory.get("RssFile")
    info.pop("contender", None)
    record["info"] = info
    record["written_bytes"] = common.tree_bytes(outdir, exclude=contenders.input_in_outdir(name, input_path, outdir))
    return record


def bench_size(
    rows: int,
    names: list[str],
    repeat: int,
    *,
    seed: int = common.DEFAULT_SEED,
    data_dir: Path = common.DATA_DIR,
    work_dir: Path = common.WORK_DIR,
    mismatch_dir: Path | None = None,
    settle: float | None = None,
) -> dict[str, Any]:
    input_path = common.dataset(rows, seed, data_dir)
    size = input_path.stat().st_size
    notes: list[str] = []
    runnable = []
    for name in names:
        limit = contenders.CONTENDERS[name].max_rows
        if limit is not None and rows > limit:
            notes.append(f"{contenders.CONTENDERS[name].label} skipped: more than {limit:,} rows holds the whole frame in memory")
        else:
            runnable.append(name)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in runnable}
    reference: tuple[str, Any] | None = None
    for r in range(repeat):
        warm = common.warm_cache(input_path)
        common.log(f"[{common.rows_label(rows)}] round {r + 1}/{repeat} (input read once to warm the cache: {warm:.2f} s)")
        order = runnable[r % len(runnable) :] + runnable[: r % len(runnable)]
        for name in order:
            outdir = work_dir / f"{name}-{rows}"
            record = run_once(name, input_path, outdir, settle=settle)
            runs[name].append(record)
            if "error" in record:
                common.log(f"  {name:<20} FAILED after {record['wall']:.2f} s: {record['error'].splitlines()[-1]}")
                shutil.rmtree(outdir, ignore_errors=True)
                continue
            agg = contenders.aggregates_path(name, outdir)
            checked = ""
            if agg is not None:
                if not agg.exists():
                    raise compare.Mismatch(f"{name} wrote no aggregates at {agg}")
                df = compare.read(agg)
                record["groups"] = df.height
                if reference is None:
                    reference = (name, df)
                    checked = f"{df.height:,} groups (reference)"
                else:
                    diff = compare.difference(reference[1], df, reference[0], name)
                    if diff:
                        if mismatch_dir is not None:
                            mismatch_dir.mkdir(parents=True, exist_ok=True)
                            (mismatch_dir / f"mismatch-{rows}-{name}.txt").write_text(diff + "\n")
                        raise compare.Mismatch(f"[{common.rows_label(rows)}] {name}: {diff}")
                    checked = f"= {reference[0]}"
            shutil.rmtree(outdir, ignore_errors=True)
            os.sync()
            busy = f"  [others busy {record['busy_before']:.0%}]" if record.get("busy_before") is not None else ""
            cpu = f"cpu {record['cpu']:6.2f} s" if record.get("cpu") is not None else ""
            common.log(
                f"  {name:<20} {record['wall']:7.2f} s  {cpu}  {record['peak_rss_mib']:6.0f} MiB  "
                f"(work {record['work_seconds']:.2f} s)  {checked}{busy}"
            )
    if repeat == 1:
        notes.append(f"One round only (--repeat 1): every figure at {common.rows_label(rows)} is a single run")
    codes = sorted({r["code"] for r in runs.get("pipeline", []) if r.get("code")})
    if len(codes) > 1:
        notes.append(
            f"WARNING: shared/ (or function_app.py, contracts/) changed on disk between the pipeline's runs "
            f"(code {', '.join(codes)}), so they did not all measure the same code"
        )
    elif codes:
        notes.append(f"Every pipeline run measured the same code (hash {codes[0]} of shared/, function_app.py, contracts/)")
    busy = [r["busy_before"] for rs in runs.values() for r in rs if r.get("busy_before") is not None]
    if busy:
        notes.append(
            f"Other work on the machine just before each run (CPU share, 1 s sample, after waiting up to {settle:.0f} s "
            f"for it to drop under 15%): median {common.median(busy):.0%}, max {max(busy):.0%}"
        )
    return {
        "kind": "transform",
        "rows": rows,
        "bytes": size,
        "input": input_path.name,
        "seed": seed,
        "repeat": repeat,
        "rss_method": measure.METHOD,
        "notes": notes,
        "reference": reference[0] if reference else None,
        "contenders": {n: summarise(n, runs[n], rows, size) for n in runnable},
        **common.stamp(),
    }


def summarise(name: str, records: list[dict[str, Any]], rows: int, size: int) -> dict[str, Any]:
    ok = [r for r in records if "error" not in r]
    c = contenders.CONTENDERS[name]
    out: dict[str, Any] = {
        "label": c.label,
        "reference": c.reference,
        "runs": records,
        "ok": len(ok),
        "failed": len(records) - len(ok),
    }
    if not ok:
        out["error"] = records[-1].get("error", "no run") if records else "no run"
        return out
    wall = common.median([r["wall"] for r in ok])
    out |= {
        "wall": wall,
        "wall_min": min(r["wall"] for r in ok),
        "wall_max": max(r["wall"] for r in ok),
        "work": common.median([r["work_seconds"] for r in ok if r.get("work_seconds") is not None]),
        "cpu": common.median([r["cpu"] for r in ok if r.get("cpu") is not None]) if any(r.get("cpu") for r in ok) else None,
        "peak_rss_mib": common.median([r["peak_rss_mib"] for r in ok]),
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in ok),
        "rows_per_s": rows / wall,
        "mb_per_s": size / 1e6 / wall,
        "written_mb": common.median([r.get("written_bytes", 0) / 1e6 for r in ok]),
    }
    anon = [r["peak_anon_mib"] for r in ok if r.get("peak_anon_mib")]
    if anon:
        out["peak_anon_mib"] = common.median(anon)
        out["peak_file_mib"] = common.median([r["peak_file_mib"] for r in ok if r.get("peak_file_mib") is not None])
    if name == "pipeline":
        timings = [r["info"].get("timings", {}) for r in ok]
        out["stages"] = {k: common.median([t[k] for t in timings if k in t]) for k in timings[0]}
        out["counts"] = ok[-1]["info"].get("counts")
    return out
