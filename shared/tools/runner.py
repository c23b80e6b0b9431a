"""A local stand-in for the Functions host, because Core Tools cannot be installed everywhere.

It drives the very functions registered in ``function_app.py``: triggers, paths, queue names,
connections and output bindings are read from ``app.get_functions()``, never wired a second
time by hand. Against Azurite it behaves like the host where that matters:

* **blob triggers** fire for every blob under the trigger path that has no receipt yet, as the
  host's container scan does (in Azure, Flex Consumption uses Event Grid instead: the same
  function, fired by a ``BlobCreated`` event; see the README). The function receives the SDK
  ``BlobClient`` built by the blob extension's own converter. A failed blob is retried up to
  ``maxDequeueCount`` times, then reported to ``webjobs-blobtrigger-poison``;
* **queue triggers** receive messages decoded per ``messageEncoding``, with the real
  ``DequeueCount``; a failure makes the message visible again after ``visibilityTimeout``,
  and after ``maxDequeueCount`` deliveries it moves to ``<queue>-poison``;
* **queue outputs** are sent after the function returns, and only if it succeeded;
* **timers** fire on demand (``fire``), with the schedule's setting resolved as the host does;
* **storage outages** do not stop it: it keeps polling, backing off up to
  ``maxPollingInterval``, and picks the work up again when storage is back.

``run(until_idle=True)`` processes everything pending, including work that work creates, and
returns when nothing is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import typing
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import azure.functions as func
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.functions.timer import TimerRequestConverter

from shared.app import settings
from shared.app.retries import is_transient
from shared.core.layout import BLOB_TRIGGER_POISON
from shared.core.redaction import printable
from shared.storage import accounts, queues
from shared.tools import clients

log = logging.getLogger("pipeline.runner")

STUCK_SECONDS = 60.0
"""How long ``run --once`` keeps polling while storage answers but a poll keeps failing."""
NOTICE_SECONDS = 5.0
"""How often the runner says again that it is still waiting: storage unreachable, or messages
it cannot see yet. Once and then silence looks like a hang."""

RECEIPTS_CONTAINER = "azure-webjobs-hosts"
PROCESSING_VISIBILITY = timedelta(minutes=5)
"""How long a received message stays invisible while a function works on it (the host renews
its lease as long as the function runs; the runner takes one long lease). If the runner dies,
the message comes back after this; ``PIPELINE_RUNNER_LEASE_SECONDS`` overrides it."""


class Out(func.Out):  # type: ignore[type-arg]
    """An output binding value, as the worker hands one to a function."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass
class FunctionSpec:
    """One registered function, as its bindings describe it."""

    name: str
    function: Callable[..., Any]
    trigger: dict[str, Any]
    outputs: list[dict[str, Any]]
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.trigger["type"])

    @classmethod
    def of(cls, fn: Any) -> FunctionSpec:
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        outputs = [b for b in bindings if b.get("direction") == "OUT"]
        user = fn.get_user_function()
        return cls(fn.get_function_name(), user, trigger, outputs, typing.get_type_hints(user))


_REGISTERED: dict[int, list[FunctionSpec]] = {}


def registered(app: func.FunctionApp) -> list[FunctionSpec]:
    """The app's functions. ``get_functions()`` validates names against what it indexed before,
    so it can only be called once per app object (as the worker does): remember the answer."""
    if id(app) not in _REGISTERED:
        _REGISTERED[id(app)] = [FunctionSpec.of(f) for f in app.get_functions()]
    return _REGISTERED[id(app)]


def resolve(value: str) -> str:
    """``%SETTING%`` binding expressions, resolved from app settings as the host does."""
    return re.sub(r"%([^%]+)%", lambda m: settings.env(m.group(1)) or "", value)


def path_pattern(path: str) -> tuple[str, re.Pattern[str]]:
    """``container/{a}/{b}`` -> the container and a regex for blob names under it: every
    variable is one path segment, except the last, which takes the rest of the name."""
    container, _, rest = path.partition("/")
    parts = re.split(r"\{(\w+)\}", rest)  # literal, name, literal, name, ..., literal
    regex = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex += re.escape(part)
        else:
            regex += f"(?P<{part}>.+)" if i == len(parts) - 2 else f"(?P<{part}>[^/]+)"
    return container, re.compile(f"^{regex}$", re.DOTALL)  # a name may hold a line end


@dataclass
class Stats:
    invocations: int = 0
    failures: int = 0
    poisoned: int = 0
    by_function: dict[str, int] = field(default_factory=dict)


class LocalHost:
    """Runs an app's functions against Azurite (or any storage account)."""

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        workers: int = 2,
        poll_seconds: float = 0.2,
        queue_overrides: dict[str, Any] | None = None,
        on_event: Callable[[str], None] | None = None,
        stuck_seconds: float = STUCK_SECONDS,
    ) -> None:
        self.specs = registered(app)
        self.workers = workers
        self.poll = poll_seconds
        q = dict(settings.queue_settings()) | (queue_overrides or {})
        self.max_dequeue = int(q.get("maxDequeueCount", 5))
        self.retry_after = _timespan(q.get("visibilityTimeout", "00:00:00"))
        self.batch = int(q.get("batchSize", 16))
        self.max_poll = _timespan(q.get("maxPollingInterval", "00:00:02")).total_seconds()
        self.lease = int(float(settings.env("PIPELINE_RUNNER_LEASE_SECONDS") or PROCESSING_VISIBILITY.total_seconds()))
        self.runner_id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.stuck_seconds = stuck_seconds
        sink = on_event or log.info
        self.on_event: Callable[[str], None] = lambda text: sink(printable(text))  # a name cannot forge a line
        self.stats = Stats()
        self._lock = threading.Lock()
        self._receipts: dict[str, set[tuple[str, str]]] = {}
        self._blob_failures: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._busy_blobs: set[tuple[str, str, str]] = set()
        self._services: dict[str, tuple[Any, Any]] = {}
        self._stop = threading.Event()

    @classmethod
    def of_function_app(cls, **options: Any) -> LocalHost:
        """A host for this repository's ``function_app.py``, the way the worker imports it."""
        logging.getLogger().setLevel(logging.ERROR)  # azure.functions warns about HTTP auth levels at import
        import function_app

        return cls(function_app.app, **options)

    # --- clients -------------------------------------------------------------------------

    def services(self, connection: str) -> tuple[Any, Any]:
        """The runner's own clients (polling, receipts, queue outputs), with a short retry policy
        so that a poll fails within seconds when storage is down and the runner can say so; the
        functions themselves use the app's clients, with the SDK's patient policy, as in Azure."""
        if connection not in self._services:
            self._services[connection] = (
                accounts.blob_service(connection, **clients.RUNNER),
                accounts.queue_service(connection, **clients.RUNNER),
            )
        return self._services[connection]

    def prepare(self) -> None:
        """Create what the host creates: its triggers' containers and queues (and their poison
        queues, which the host makes when it first needs them). Nothing a function writes to
        itself: on a fresh account, ``curated`` and ``quarantine`` are the app's to create.
        Output-binding queues are created on their first message, as the host's binding does."""
        from azure.core.exceptions import ResourceExistsError

        for spec in self.specs:
            blobs, queues = self.services(spec.trigger.get("connection", "AzureWebJobsStorage"))
            names = []
            if spec.kind == "blobTrigger":
                container, _ = path_pattern(spec.trigger["path"])
                names = [container, RECEIPTS_CONTAINER]
                for queue in (BLOB_TRIGGER_POISON,):
                    _create(queues.create_queue, queue)
            elif spec.kind == "queueTrigger":
                for queue in (spec.trigger["queueName"], spec.trigger["queueName"] + "-poison"):
                    _create(queues.create_queue, queue)
            for name in names:
                try:
                    blobs.create_container(name)
                except ResourceExistsError:
                    pass

    # --- the loop ------------------------------------------------------------------------

    def run(self, *, until_idle: bool = True, timeout: float | None = None) -> Stats:
        """Poll and dispatch until idle (or until ``stop()``/``timeout``)."""
        deadline = time.monotonic() + timeout if timeout else None
        self._until_reachable(self.prepare, deadline)
        inflight: set[Future[Any]] = set()
        outage, hidden = Notice(), Notice(first=2.0, every=2 * NOTICE_SECONDS)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fn") as pool:
            while not self._stop.is_set():
                inflight = {f for f in inflight if not f.done()}
                try:
                    started = self._dispatch(pool, inflight)
                    idle = until_idle and not inflight and not started and self._idle()
                    if until_idle and not idle and not started and not inflight:
                        self._say_what_hides(hidden)
                    else:
                        hidden.end()
                except Exception as exc:
                    # storage unreachable (a restart, a network blip): the host keeps polling,
                    # and so does the runner, backing off up to maxPollingInterval
                    if not is_transient(exc):
                        raise
                    waited = outage.due()
                    if waited is not None:
                        self.on_event(f"  runner: {_outage_words(exc, waited)} ({waited:.0f} s so far): {_brief(exc)}")
                    if until_idle and _answers(exc) and outage.lasted() > self.stuck_seconds:
                        # storage is up but a poll keeps failing (Azurite's 500 on a listing that holds a
                        # name it cannot write as XML): --once would wait forever, so it stops and says why
                        self.on_event(f"  runner: giving up after {self.stuck_seconds:.0f} s of the same failure")
                        raise
                    started, idle = 0, False
                    time.sleep(min(self.max_poll, self.poll * 2**outage.tries))
                else:
                    waited = outage.end()
                    if waited is not None:
                        self.on_event(f"  runner: storage reachable again after {waited:.0f} s")
                if idle:
                    break
                if deadline and time.monotonic() > deadline:
                    raise TimeoutError(f"the runner was still busy after {timeout} s")
                if not started:
                    time.sleep(self.poll)
        return self.stats

    def _until_reachable(self, step: Callable[[], Any], deadline: float | None) -> None:
        """Run a storage call, retrying it (and saying so every few seconds) while the storage
        is unreachable."""
        notice = Notice()
        while True:
            try:
                step()
                waited = notice.end()
                if waited is not None:
                    self.on_event(f"  runner: storage reachable after {waited:.0f} s")
                return
            except Exception as exc:
                if self._stop.is_set():
                    return  # asked to stop while waiting: nothing to stop
                if not is_transient(exc) or (deadline and time.monotonic() > deadline):
                    raise
                waited = notice.due()
                if waited is not None:
                    what = "storage unreachable, waiting for it" if not waited else "storage still unreachable"
                    self.on_event(f"  runner: {what} ({waited:.0f} s so far): {_brief(exc)}")
                time.sleep(self.max_poll)

    def _say_what_hides(self, notice: Notice) -> None:
        """``until_idle`` is waiting for work it cannot take yet: say what and for how long.
        Queue messages that no receive returns are invisible: taken by a runner that stopped
        (back when its lease ends) or waiting out a failed delivery's ``visibilityTimeout``."""
        waited = notice.due()
        if waited is None:
            return
        hidden = []
        for spec in self.specs:
            if spec.kind == "queueTrigger":
                queue = self.services(spec.trigger["connection"])[1].get_queue_client(spec.trigger["queueName"])
                count = queue.get_queue_properties().approximate_message_count or 0
                if count:
                    hidden.append(f"{count} on {spec.trigger['queueName']}")
        retry = self.retry_after.total_seconds()
        if hidden:
            self.on_event(
                f"  runner: waiting for message(s) not visible yet ({', '.join(hidden)}; {waited:.0f} s so far): "
                f"held by a runner that stopped until its lease ends (up to {self.lease} s, PIPELINE_RUNNER_LEASE_SECONDS), "
                f"or a failed delivery waiting out visibilityTimeout ({retry:g} s)"
            )
        now = time.monotonic()
        with self._lock:
            blobs = sum(1 for _, not_before in self._blob_failures.values() if not_before > now)
        if blobs:
            self.on_event(f"  runner: {blobs} blob(s) wait out visibilityTimeout ({retry:g} s) before their next try")

    def _watch(self, future: Future[Any], label: str) -> Future[Any]:
        """An invocation's own bookkeeping (deleting its message, writing its receipt) can fail
        when storage goes away; the message or blob then comes back and is run again (at least
        once). Say so instead of losing the exception in the future."""

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is not None:
                self.on_event(f"  {label}: the runner's bookkeeping failed, it will come back: {type(exc).__name__}: {exc}")

        future.add_done_callback(done)
        return future

    def stop(self) -> None:
        self._stop.set()

    def _dispatch(self, pool: ThreadPoolExecutor, inflight: set[Future[Any]]) -> int:
        started = 0
        for spec in self.specs:
            free = self.workers - len(inflight)
            if free <= 0:
                break
            if spec.kind == "blobTrigger":
                for name, etag in self._new_blobs(spec)[:free]:
                    key = (spec.name, name, etag)
                    with self._lock:
                        self._busy_blobs.add(key)
                    inflight.add(self._watch(pool.submit(self._claimed_delivery, spec, name, etag), f"{spec.name}: {name}"))
                    started += 1
            elif spec.kind == "queueTrigger":
                queue = self.services(spec.trigger["connection"])[1].get_queue_client(spec.trigger["queueName"])
                for msg in queue.receive_messages(max_messages=min(free, self.batch, 32), visibility_timeout=self.lease):
                    label = f"{spec.name}: {spec.trigger['queueName']} #{msg.dequeue_count}"
                    inflight.add(self._watch(pool.submit(self._invoke_queue, spec, queue, msg), label))
                    started += 1
                    free -= 1
                    if free <= 0:
                        break
        return started

    def _idle(self) -> bool:
        for spec in self.specs:
            if spec.kind == "blobTrigger" and self._new_blobs(spec, include_waiting=True):
                return False
            if spec.kind == "queueTrigger":
                queue = self.services(spec.trigger["connection"])[1].get_queue_client(spec.trigger["queueName"])
                if queue.get_queue_properties().approximate_message_count:
                    return False
        return True

    # --- blob triggers -------------------------------------------------------------------

    def _receipt_prefix(self, spec: FunctionSpec, kind: str = "blobreceipts") -> str:
        return f"{kind}/local-runner/{spec.name}/"

    def _receipt_name(self, spec: FunctionSpec, name: str, etag: str, kind: str = "blobreceipts") -> str:
        return receipt_name(spec.name, name, etag, kind)

    def _receipt_set(self, spec: FunctionSpec) -> set[tuple[str, str]]:
        """(hash of name, etag) of every blob version this function has a receipt for."""
        if spec.name not in self._receipts:
            blobs, _ = self.services(spec.trigger["connection"])
            prefix = self._receipt_prefix(spec)
            found = set()
            for b in blobs.get_container_client(RECEIPTS_CONTAINER).list_blobs(name_starts_with=prefix):
                etag, _, hashed = b.name[len(prefix) :].partition("/")
                found.add((hashed, etag))
            self._receipts[spec.name] = found
        return self._receipts[spec.name]

    def _new_blobs(self, spec: FunctionSpec, include_waiting: bool = False) -> list[tuple[str, str]]:
        container, pattern = path_pattern(spec.trigger["path"])
        blobs, _ = self.services(spec.trigger["connection"])
        receipts = self._receipt_set(spec)
        now = time.monotonic()
        out = []
        for b in blobs.get_container_client(container).list_blobs():
            etag = b.etag.strip('"')
            if not pattern.match(b.name) or (_name_hash(b.name), etag) in receipts:
                continue
            key = (spec.name, b.name, etag)
            with self._lock:
                if key in self._busy_blobs:
                    continue
                not_before = self._blob_failures.get(key, (0, 0.0))[1]
            if not include_waiting and now < not_before:
                continue
            out.append((b.name, etag))
        return out

    def _write_receipt(self, spec: FunctionSpec, name: str, etag: str) -> None:
        blobs, _ = self.services(spec.trigger["connection"])
        with self._lock:
            self._receipt_set(spec).add((_name_hash(name), etag))  # even if writing it fails below
        blobs.get_blob_client(RECEIPTS_CONTAINER, self._receipt_name(spec, name, etag)).upload_blob(b"", overwrite=True)

    def _claim(self, spec: FunctionSpec, name: str, etag: str) -> bool:
        """Take a blob version for this runner, so that two runners started at once never both
        work on it (each would ingest every file: a correct result for double the work). A claim
        is a blob created only if absent; one older than the lease (a runner that died) is
        taken over."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blobs, _ = self.services(spec.trigger["connection"])
        claim = blobs.get_blob_client(RECEIPTS_CONTAINER, self._receipt_name(spec, name, etag, "blobclaims"))
        for _ in range(2):
            try:
                claim.upload_blob(self.runner_id.encode(), overwrite=False)
                return True
            except ResourceExistsError:
                try:
                    props = claim.get_blob_properties()
                    if datetime.now(UTC) - props.last_modified < timedelta(seconds=self.lease):
                        return False  # another runner works on it
                    claim.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
                except (ResourceNotFoundError, ResourceModifiedError):
                    continue  # released or taken over meanwhile: try again
        return False

    def _has_receipt(self, spec: FunctionSpec, name: str, etag: str) -> bool:
        blobs, _ = self.services(spec.trigger["connection"])
        return bool(blobs.get_blob_client(RECEIPTS_CONTAINER, self._receipt_name(spec, name, etag)).exists())

    def _release(self, spec: FunctionSpec, name: str, etag: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        blobs, _ = self.services(spec.trigger["connection"])
        try:
            blobs.get_blob_client(RECEIPTS_CONTAINER, self._receipt_name(spec, name, etag, "blobclaims")).delete_blob()
        except ResourceNotFoundError:
            pass

    def deliver_blob(self, spec: FunctionSpec, name: str, etag: str) -> None:
        """One delivery of a blob event for ``name`` at ``etag``, through the runner's own
        invocation path: retries, receipts and the poison queue as the host keeps them."""
        container, _ = path_pattern(spec.trigger["path"])
        key = (spec.name, name, etag)
        try:
            arg = self._blob_argument(spec, container, name)
            ok = self._call(spec, {spec.trigger["name"]: arg}, f"{container}/{name}")
            with self._lock:
                failures = self._blob_failures.get(key, (0, 0.0))[0] + (0 if ok else 1)
            if ok:
                self._write_receipt(spec, name, etag)
            elif failures >= self.max_dequeue:
                poison = json.dumps(
                    {"FunctionId": spec.name, "BlobType": "BlockBlob", "ContainerName": container, "BlobName": name, "ETag": etag}
                )
                self.services(spec.trigger["connection"])[1].get_queue_client(BLOB_TRIGGER_POISON).send_message(
                    queues.encode_message(poison, settings.message_encoding())
                )
                self._write_receipt(spec, name, etag)
                self.stats.poisoned += 1
                self.on_event(f"  {spec.name}: {container}/{name} failed {failures} times -> {BLOB_TRIGGER_POISON}")
            else:
                with self._lock:
                    self._blob_failures[key] = (failures, time.monotonic() + self.retry_after.total_seconds())
        finally:
            with self._lock:
                self._busy_blobs.discard(key)

    def _claimed_delivery(self, spec: FunctionSpec, name: str, etag: str) -> None:
        """What the poll does with a new blob version: claim it, make sure no other runner
        finished it since this one listed, deliver it, let the claim go. (``deliver_blob`` alone
        is one delivery, as the host may make several of one event.)"""
        key = (spec.name, name, etag)
        try:
            if not self._claim(spec, name, etag):
                with self._lock:
                    self._blob_failures[key] = (self._blob_failures.get(key, (0, 0.0))[0], time.monotonic() + self.max_poll)
                return
            try:
                if self._has_receipt(spec, name, etag):
                    with self._lock:
                        self._receipt_set(spec).add((_name_hash(name), etag))
                    return
                self.deliver_blob(spec, name, etag)
            finally:
                self._release(spec, name, etag)
        finally:
            with self._lock:
                self._busy_blobs.discard(key)  # also when storage failed the claim: the next poll tries again

    def _blob_argument(self, spec: FunctionSpec, container: str, name: str) -> Any:
        hint = spec.hints.get(spec.trigger["name"])
        from azurefunctions.extensions.bindings.blob import BlobClientConverter

        content = json.dumps({"Connection": spec.trigger["connection"], "ContainerName": container, "BlobName": name})
        model = SimpleNamespace(version="1.0", source="AzureStorageBlobs", content_type="application/json", content=content)
        from azurefunctions.extensions.base import Datum as ExtDatum

        if hint is None or not BlobClientConverter.check_input_type_annotation(hint):
            raise TypeError(f"{spec.name}: the runner supports SDK-type blob triggers (BlobClient), not {hint!r}")
        return BlobClientConverter.decode(ExtDatum(type="model_binding_data", value=model), trigger_metadata=None, pytype=hint)

    # --- queue triggers ------------------------------------------------------------------

    def _invoke_queue(self, spec: FunctionSpec, queue: Any, msg: Any) -> None:
        try:
            body = queues.decode_message(msg.content, settings.message_encoding()).encode("utf-8")
        except Exception:  # noqa: BLE001 - the host fails such a message the same way
            body = None
        label = f"{spec.trigger['queueName']} #{msg.dequeue_count}"
        ok = False
        if body is not None:
            meta = {
                "Id": Datum(msg.id, "string"),
                "DequeueCount": Datum(msg.dequeue_count, "int"),
                "InsertionTime": Datum(_iso(msg.inserted_on), "string"),
                "ExpirationTime": Datum(_iso(msg.expires_on), "string"),
                "NextVisibleTime": Datum(_iso(msg.next_visible_on), "string"),
                "PopReceipt": Datum(msg.pop_receipt, "string"),
            }
            arg = QueueMessageInConverter.decode(Datum(body, "bytes"), trigger_metadata=meta)
            ok = self._call(spec, {spec.trigger["name"]: arg}, label)
        if ok:
            queue.delete_message(msg.id, msg.pop_receipt)
        elif msg.dequeue_count >= self.max_dequeue:
            poison = self.services(spec.trigger["connection"])[1].get_queue_client(spec.trigger["queueName"] + "-poison")
            poison.send_message(msg.content)
            queue.delete_message(msg.id, msg.pop_receipt)
            self.stats.poisoned += 1
            self.on_event(
                f"  {spec.name}: message {msg.id} failed {msg.dequeue_count} times -> {spec.trigger['queueName']}-poison"
            )
        else:
            queue.update_message(msg.id, msg.pop_receipt, visibility_timeout=int(self.retry_after.total_seconds()))

    # --- timers --------------------------------------------------------------------------

    def fire(self, function_name: str, *, past_due: bool = False) -> bool:
        """Run a timer-triggered function now, as the host does when its schedule comes due."""
        spec = next(s for s in self.specs if s.name == function_name)
        if spec.kind != "timerTrigger":
            raise ValueError(f"{function_name} is not a timer function")
        self.prepare()
        schedule = resolve(spec.trigger["schedule"])
        info = json.dumps(
            {"IsPastDue": past_due, "Schedule": {"AdjustForDST": True}, "ScheduleStatus": {"Last": _iso(datetime.now(UTC))}}
        )
        timer = TimerRequestConverter.decode(Datum(info, "json"), trigger_metadata=None)
        return self._call(spec, {spec.trigger["name"]: timer}, f"schedule {schedule!r}")

    # --- invocation ----------------------------------------------------------------------

    def _call(self, spec: FunctionSpec, args: dict[str, Any], label: str) -> bool:
        outs = {o["name"]: Out() for o in spec.outputs}
        started = time.perf_counter()
        with self._lock:
            self.stats.invocations += 1
            self.stats.by_function[spec.name] = self.stats.by_function.get(spec.name, 0) + 1
        try:
            spec.function(**args, **outs)
        except Exception as exc:
            with self._lock:
                self.stats.failures += 1
            self.on_event(
                f"  {spec.name}: {label} failed after {time.perf_counter() - started:.2f} s: {type(exc).__name__}: {exc}"
            )
            log.debug("invocation failed", exc_info=True)
            return False
        for binding in spec.outputs:
            value = outs[binding["name"]].get()
            if value is None or binding["type"] != "queue":
                continue
            queue = self.services(binding["connection"])[1].get_queue_client(binding["queueName"])
            for item in value if isinstance(value, list) else [value]:
                text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
                _send_creating(queue, queues.encode_message(text, settings.message_encoding()))
        self.on_event(f"  {spec.name}: {label} done in {time.perf_counter() - started:.2f} s")
        return True


def _send_creating(queue: Any, body: str) -> None:
    """Send, creating the queue first if it does not exist: what the host's queue output
    binding does (the WebJobs SDK adds the message and creates the queue if needed)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        queue.send_message(body)
    except ResourceNotFoundError:
        _create(lambda _name: queue.create_queue(), queue.queue_name)
        queue.send_message(body)


class Notice:
    """A waiting state said out loud: after ``first`` seconds, then every ``every`` seconds
    while it lasts; ``end()`` closes it and says how long it lasted (if anything was said)."""

    def __init__(self, first: float = 0.0, every: float = NOTICE_SECONDS) -> None:
        self.first, self.every = first, every
        self.since: float | None = None
        self.said: float | None = None
        self.tries = 0

    def due(self) -> float | None:
        """Seconds waited so far, when it is time to say so (again); else ``None``."""
        now = time.monotonic()
        self.tries += 1
        self.since = now if self.since is None else self.since
        if now - self.since < self.first or (self.said is not None and now - self.said < self.every):
            return None
        self.said = now
        return now - self.since

    def lasted(self) -> float:
        """Seconds since the state began (0 when it is not on)."""
        return time.monotonic() - self.since if self.since is not None else 0.0

    def end(self) -> float | None:
        waited = time.monotonic() - self.since if self.since is not None and self.said is not None else None
        self.since, self.said, self.tries = None, None, 0
        return waited


def receipt_name(function: str, name: str, etag: str, kind: str = "blobreceipts") -> str:
    """The receipt (or ``blobclaims`` claim) of a blob version in ``azure-webjobs-hosts``, named
    by a hash of the blob's name: any name a blob can have (one storage refuses to address in a
    path, one of 1,024 characters) makes a valid one."""
    return f"{kind}/local-runner/{function}/{etag}/{_name_hash(name)}"


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _answers(exc: BaseException) -> bool:
    """Storage answered (an HTTP status), as opposed to not being reachable at all."""
    return getattr(exc, "status_code", None) is not None


def _outage_words(exc: BaseException, waited: float) -> str:
    if _answers(exc):
        return f"storage answers {getattr(exc, 'status_code', '?')} to a poll, trying again"
    return "storage still unreachable" if waited else "storage unreachable, polling again until it is back"


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _create(create: Callable[[str], Any], name: str) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        create(name)
    except ResourceExistsError:
        pass


def _timespan(value: str) -> timedelta:
    h, m, s = (float(x) for x in str(value).split(":"))
    return timedelta(hours=h, minutes=m, seconds=s)


def _iso(value: datetime | None) -> str:
    return (value or datetime.now(UTC)).isoformat()
