"""Queue messages as the Functions host reads and writes them, for code outside a binding.

The host encodes message bodies per ``host.json`` (``extensions.queues.messageEncoding``:
``base64``, its default, or ``none``); whoever sends to or reads from a trigger's queue by hand
(the nightly job's replays, the CLI, the local runner) must do the same, or the trigger fails
to decode the message. The encoding is passed in by the caller, who has read ``host.json``.
"""

from __future__ import annotations

import base64
from typing import Any

from shared.core.layout import poison_queue
from shared.storage import accounts

__all__ = ["QueueSender", "decode_message", "encode_message"]


def encode_message(text: str, encoding: str = "base64") -> str:
    """Encode a queue message body the way the Functions host expects (host.json)."""
    if encoding == "base64":
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


def decode_message(body: str, encoding: str = "base64") -> str:
    if encoding == "base64":
        return base64.b64decode(body).decode("utf-8")
    return body


class QueueSender:
    """Sends messages the way a queue output binding would."""

    def __init__(self, service: Any | None = None, encoding: str = "base64") -> None:
        self.service = service or accounts.queue_service()
        self.encoding = encoding

    def send(self, queue: str, text: str, visibility_timeout: int | None = None) -> None:
        self.service.get_queue_client(queue).send_message(
            encode_message(text, self.encoding), visibility_timeout=visibility_timeout
        )

    def ensure_queues(self, names: tuple[str, ...]) -> None:
        """Each queue and its ``-poison`` twin (the host makes those only when it first needs them)."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        for name in names:
            for queue in (name, poison_queue(name)):
                try:
                    self.service.create_queue(queue)
                except ResourceExistsError:
                    pass
                except HttpResponseError as exc:
                    if exc.status_code != 403:  # may send but not create: assume the Bicep made it
                        raise
