"""The work behind each trigger of ``function_app.py``, with its clients built once per worker.

Contracts are loaded when this module is imported, so a broken contract stops the Function
App at start-up (with the file, line and problem in the host log) instead of failing at the
first blob. Heavy imports (polars, psycopg, the storage SDK) wait for the first invocation to
keep cold starts short.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from functools import cache
from typing import Any

from shared.app import contracts, logs, settings, telemetry
from shared.core import documents, layout

log = logging.getLogger("pipeline.triggers")

CONTRACTS = contracts.Registry()
logs.protect()
telemetry.configure()


@cache
def _store() -> Any:
    """The data account, with what the functions write to made sure of, once per process.

    The host creates only its triggers' container and queues; ``curated``, ``quarantine``,
    the queues the functions send to themselves and their poison queues may not exist on a
    fresh account (one where someone created ``raw`` by hand). Seven idempotent requests on
    the first invocation, none after."""
    from shared.storage.blobs import BlobStore
    from shared.storage.queues import QueueSender

    store = BlobStore()
    store.ensure_containers(layout.CONTAINERS)
    QueueSender(encoding=settings.message_encoding()).ensure_queues(layout.QUEUES)
    return store


@cache
def _connections() -> Any:
    from shared.postgres.connections import ConnectionCache

    return ConnectionCache()


@cache
def _loader() -> Any:
    from shared.app.load import Loader

    return Loader(_connections().get, _store(), CONTRACTS, settings.ledger_schema(), settings.reader_role())


def ingest_blob(client: Any) -> str:
    """Blob trigger: ingest the blob the SDK client points at; return the load request."""
    from shared.app import ingest
    from shared.storage import blobs

    doc = ingest.ingest(
        _store(), client.blob_name, CONTRACTS, container=client.container_name, reader=lambda: blobs.open_client(client)
    )
    return documents.load_request(doc)


def ingest_requested(body: str) -> str | None:
    """Queue trigger: a re-drive asks for a raw blob to be ingested again."""
    from azure.core.exceptions import ResourceNotFoundError

    from shared.app import ingest

    try:
        request = documents.parse_ingest_request(body)
    except documents.DocumentRefused as refusal:
        _park(layout.INGEST_QUEUE, body, refusal)
        return None
    container, blob = request.get("container", layout.RAW), request["blob"]
    try:
        doc = ingest.ingest(_store(), blob, CONTRACTS, container=container, force=bool(request.get("force")))
    except ResourceNotFoundError:
        log.warning("re-drive of %s skipped: the blob no longer exists", blob, extra={"source_blob": blob})
        return None
    return documents.load_request(doc)


def load_requested(body: str, dequeue_count: int = 1) -> None:
    """Queue trigger: load a manifest into PostgreSQL. Raises (so the host retries) only when
    the failure is transient; permanent failures are recorded in the ledger and acknowledged."""
    try:
        request = documents.parse_load_request(body)
    except documents.DocumentRefused as refusal:
        _park(layout.LOAD_QUEUE, body, refusal)
        return
    try:
        _loader().load(request)
    except Exception:
        _connections().discard()  # a fresh connection for the retry
        log.warning(
            "load of %s failed (delivery %d); the host will retry", request["source"]["blob"], dequeue_count,
            extra={"run_id": request["run_id"], "source_blob": request["source"]["blob"], "dequeue_count": dequeue_count},
        )  # fmt: skip
        raise


def _park(queue: str, body: str, refusal: documents.DocumentRefused) -> None:
    """A message that is not a document of ours cannot succeed on a retry: move it to the
    queue's poison queue at once (where ``replay --poison`` finds it) and say why, once."""
    from shared.storage.queues import QueueSender

    poison = layout.poison_queue(queue)
    _store()  # the poison queue exists once the store is built
    QueueSender(encoding=settings.message_encoding()).send(poison, body)
    log.error(
        "refused a message on %s: %s (%s); moved to %s", queue, refusal.code, refusal.detail, poison,
        extra={"error_code": refusal.code},
    )  # fmt: skip


def nightly(past_due: bool = False) -> list[str]:
    """Timer: re-queue whatever was missed or failed; return the ingest requests to send."""
    from shared.app import reprocess

    conn = _connections().get()
    _loader().prepare(conn, None)
    plan = reprocess.make_plan(
        _store(),
        conn,
        settings.ledger_schema(),
        CONTRACTS,
        grace=timedelta(minutes=settings.reprocess_grace_minutes()),
        limit=settings.reprocess_batch(),
        retention=timedelta(days=settings.raw_retention_days()),
    )
    try:
        reprocess.maintain_lake(
            _store(), conn, settings.ledger_schema(), CONTRACTS, retention_hours=settings.lake_retention_hours()
        )
    except Exception as exc:  # noqa: BLE001 - the re-drives above must still be sent; tomorrow tries again
        log.warning("nightly lake upkeep failed: %s", exc)
    from shared.storage import poison
    from shared.storage.accounts import queue_service

    parked = poison.counts(queue_service())
    log.info(
        "nightly: %d re-drive(s) %s; poison queues %s%s",
        len(plan.requests), plan.reasons, parked, " (ran late)" if past_due else "",
        extra={"summary": {**plan.summary(), "poison": parked}},
    )  # fmt: skip
    if sum(parked.values()):
        log.warning("%d message(s) wait in poison queues: python -m shared replay --poison", sum(parked.values()))
    return [json.dumps(r) for r in plan.requests]


def reset() -> None:
    """Forget the clients built from earlier settings (the local runner and tests switch them)."""
    if _connections.cache_info().currsize:
        _connections().discard()
    for built in (_loader, _connections, _store):
        built.cache_clear()
