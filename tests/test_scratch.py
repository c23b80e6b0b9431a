"""Scratch folders: a killed run's are swept by the next process, a live run's never are."""

from __future__ import annotations

import os
import time

from shared.app import scratch, settings


def test_the_first_scratch_folder_of_a_process_sweeps_what_killed_runs_left(tmp_path):
    timeout = settings.function_timeout_seconds()
    stale = [tmp_path / "ingest-20240101T000000000Z-dead-x", tmp_path / "load-abc"]
    live = tmp_path / "ingest-20240101T000000000Z-busy-y"
    foreign = tmp_path / "someone-elses"
    for folder in (*stale, live, foreign):
        (folder / "out").mkdir(parents=True)
    old = time.time() - timeout - 60
    for folder in (*stale, foreign):
        os.utime(folder, (old, old))

    made = scratch.new_folder("ingest-now-", tmp_path)

    assert made.is_dir() and made.parent == tmp_path
    assert not any(f.exists() for f in stale)
    assert live.exists() and foreign.exists(), "a folder in use, or not ours, stays"


def test_the_sweep_keeps_folders_younger_than_the_function_timeout(tmp_path):
    (tmp_path / "ingest-young").mkdir()
    assert scratch.sweep(tmp_path, older_than=1800, now=time.time() + 1799) == []
    assert scratch.sweep(tmp_path, older_than=1800, now=time.time() + 1801) == ["ingest-young"]
