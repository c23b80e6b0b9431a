"""Poison queues: messages the host gave up on after ``maxDequeueCount`` deliveries.

``<queue>-poison`` holds the load and ingest requests that failed every delivery;
``webjobs-blobtrigger-poison`` names the blobs whose ``ingest`` failed every retry. Nothing
in them is lost: the nightly job counts and reports them, and ``replay`` puts them back once
their cause is fixed (a message moved back keeps its body, so the run it asks for is the same).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared.core import layout
from shared.core.layout import BLOB_TRIGGER_POISON, POISON_QUEUES
from shared.storage.queues import decode_message, encode_message

__all__ = ["BLOB_TRIGGER_POISON", "POISON_QUEUES", "PoisonMessage", "counts", "peek", "replay"]


@dataclass(frozen=True)
class PoisonMessage:
    queue: str
    id: str
    body: str
    inserted_on: Any

    def describe(self) -> str:
        """A one-line account of what the message asked for."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return self.body[:120]
        if "BlobName" in doc:
            return f"ingest {doc.get('ContainerName')}/{doc['BlobName']}"
        if "source" in doc:
            return f"load {doc['source'].get('blob')} (run {doc.get('run_id')})"
        if "blob" in doc:
            return f"ingest {doc.get('container', layout.RAW)}/{doc['blob']}"
        return self.body[:120]


def counts(queues: Any) -> dict[str, int]:
    """Approximate number of messages in each poison queue (0 when a queue does not exist)."""
    from azure.core.exceptions import ResourceNotFoundError

    out = {}
    for name in POISON_QUEUES:
        try:
            out[name] = queues.get_queue_client(name).get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            out[name] = 0
    return out


def peek(queues: Any, queue: str, limit: int = 32, *, encoding: str = "base64") -> list[PoisonMessage]:
    """Look without taking: up to 32 messages (the service's peek limit)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        msgs = queues.get_queue_client(queue).peek_messages(max_messages=min(limit, 32))
    except ResourceNotFoundError:
        return []
    return [PoisonMessage(queue, m.id, _decode(m.content, encoding), m.inserted_on) for m in msgs]


def _decode(content: str, encoding: str) -> str:
    try:
        return decode_message(content, encoding)
    except ValueError:
        return content


def replay(queues: Any, queue: str, *, message_id: str | None = None, encoding: str = "base64") -> Iterator[PoisonMessage]:
    """Move poison messages back to where they came from (all, or one by id).

    A load or ingest request goes back to its queue unchanged. A blob-trigger poison entry
    becomes an ingest request for that blob (the blob trigger cannot be fired again by hand)."""
    client = queues.get_queue_client(queue)
    while True:
        batch = list(client.receive_messages(max_messages=32, visibility_timeout=60))
        if not batch:
            return
        for msg in batch:
            if message_id and msg.id != message_id:
                continue  # stays invisible for a minute, then is back untouched
            body = _decode(msg.content, encoding)
            target, text = _destination(queue, body)
            queues.get_queue_client(target).send_message(encode_message(text, encoding))
            client.delete_message(msg.id, msg.pop_receipt)
            yield PoisonMessage(queue, msg.id, body, msg.inserted_on)
        if message_id:
            return


def _destination(queue: str, body: str) -> tuple[str, str]:
    if queue == BLOB_TRIGGER_POISON:
        doc = json.loads(body)
        request = {"container": doc.get("ContainerName", layout.RAW), "blob": doc["BlobName"], "reason": "poison_replay"}
        return layout.INGEST_QUEUE, json.dumps(request)
    return queue.removesuffix("-poison"), body
