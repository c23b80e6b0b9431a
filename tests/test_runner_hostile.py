"""The local runner against a hostile storage world: names storage cannot address or list, and
two runners started at once. Real Azurite, real PostgreSQL, the real runner."""

from __future__ import annotations

import threading

import psycopg
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

import function_app
from shared.tools.runner import LocalHost

HEADER = b"Date,Domain,Location,Value,Transaction_count\n"


def host(events: list[str] | None = None, **options) -> LocalHost:
    sink = events.append if events is not None else (lambda _t: None)
    return LocalHost(
        function_app.app,
        workers=2,
        poll_seconds=0.05,
        queue_overrides={"visibilityTimeout": "00:00:01"},
        on_event=sink,
        **options,
    )


def upload(azurite, name: str, data: bytes) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    if not service.get_container_client("raw").exists():
        service.create_container("raw")
    service.get_blob_client("raw", name).upload_blob(data, overwrite=True)


def loaded(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT source_blob, rows_read FROM pipeline.ledger WHERE status = 'loaded'").fetchall())


def test_two_runners_started_at_once_ingest_each_blob_once(services):
    azurite, dsn = services
    names = [f"bank_transactions/day-{i}.csv" for i in range(6)]
    for i, name in enumerate(names):
        upload(azurite, name, HEADER + b"1/%d/2022,RETAIL,Goa,%d,1\n" % (i + 1, i))
    first, second = host(), host()
    first.prepare()
    start = threading.Barrier(2)

    def run(runner: LocalHost) -> None:
        start.wait()
        runner.run(until_idle=True, timeout=120)

    threads = [threading.Thread(target=run, args=(r,)) for r in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ingests = first.stats.by_function.get("ingest", 0) + second.stats.by_function.get("ingest", 0)
    assert ingests == len(names), "each blob version is claimed by one runner"
    assert loaded(dsn) == dict.fromkeys(names, 1)


def test_a_blob_storage_cannot_address_is_retried_parked_once_and_the_runner_goes_on(services):
    azurite, dsn = services
    # the SDK normalises this to back/slash/../x.csv, which Azurite then refuses (403) to every call
    upload(azurite, "bank_transactions/back\\slash\\..\\x.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n")
    upload(azurite, "bank_transactions/fine.csv", HEADER + b"1/2/2022,RETAIL,Goa,7,1\n")
    events: list[str] = []

    stats = host(events).run(until_idle=True, timeout=120)

    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    parked = queues.get_queue_client("webjobs-blobtrigger-poison").get_queue_properties().approximate_message_count
    assert parked == 1 and stats.poisoned == 1
    assert stats.by_function["ingest"] == 5 + 1  # maxDequeueCount tries of the bad one, one of the good one
    assert loaded(dsn) == {"bank_transactions/fine.csv": 1}


def test_run_once_gives_up_saying_why_when_a_listing_keeps_failing(services):
    azurite, _ = services
    upload(azurite, "bank_transactions/escape\x1b[2Kme.csv", HEADER)  # Azurite cannot list it: HTTP 500
    events: list[str] = []

    with pytest.raises(HttpResponseError) as failed:
        host(events, stuck_seconds=3).run(until_idle=True, timeout=120)

    assert failed.value.status_code == 500
    assert any("storage answers 500 to a poll" in e for e in events)
    assert any("giving up after 3 s of the same failure" in e for e in events)
