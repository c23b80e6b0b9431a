"""The local runner for the fault tests: ``python -m shared run`` with a short retry delay.

The same ``LocalHost`` driving the same registered functions, with ``visibilityTimeout``
overridden (as the in-process tests do with ``queue_overrides``) so that a failed message comes
back after a second instead of host.json's 30 s; a soak of a few minutes can then see many
faults and their retries. Settings come from the environment, as for ``python -m shared run``.

    python -m tests.faults.runner --workers 2 --retry-after 1 [--once] [--storage-retries 1]

``--storage-retries`` shortens the storage SDK's own retries (``harness.impatient_storage``), so
that a storage restart reaches the functions and the runner instead of stalling every request
for 15 s or more.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any


def _warm_the_lake() -> None:
    """Set up delta-rs as a worker's first publish does (its runtime and object store: about
    100 MB, once per process), so that the soak's memory curve shows what work adds, not when a
    process first touched the lake. The Function App itself imports it only to publish."""
    import tempfile

    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    with tempfile.TemporaryDirectory() as empty:
        try:
            DeltaTable(empty)
        except TableNotFoundError:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.runner")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--retry-after", type=float, default=1.0, help="visibilityTimeout after a failure, seconds")
    p.add_argument("--once", action="store_true", help="process everything pending, then exit")
    p.add_argument("--storage-retries", type=int, help="storage SDK retries (default: the SDK's own)")
    p.add_argument("--storage-backoff", type=float, default=0.5, help="with --storage-retries: first back-off, seconds")
    args = p.parse_args(argv)
    stopping = threading.Event()  # SIGTERM ends the runner cleanly, even while the app is imported
    hosts: list[Any] = []

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for h in hosts:
            h.stop()

    signal.signal(signal.SIGTERM, stop)
    if args.storage_retries is not None:
        from tests.faults.harness import impatient_storage

        impatient_storage(args.storage_retries, args.storage_backoff)

    from shared.app import logs

    logs.configure()
    logging.getLogger().setLevel(logging.ERROR)
    import function_app
    from shared.tools.runner import LocalHost

    _warm_the_lake()

    seconds = int(args.retry_after)
    host = LocalHost(
        function_app.app,
        workers=args.workers,
        poll_seconds=0.1,
        queue_overrides={"visibilityTimeout": f"00:00:{seconds:02d}"},
        on_event=lambda text: print(text, flush=True),
    )

    hosts.append(host)
    if stopping.is_set():
        host.stop()
    stats = host.run(until_idle=args.once)
    print(f"{stats.invocations} invocations, {stats.failures} failed, {stats.poisoned} sent to poison queues", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
