"""OpenTelemetry traces and metrics, exported to Application Insights when it is configured.

Without ``APPLICATIONINSIGHTS_CONNECTION_STRING`` every call here is a no-op of the
OpenTelemetry API (cheap, nothing exported). With it, the Azure Monitor OpenTelemetry distro is
configured once per worker; with ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` set to
``Authorization=AAD;ClientId=<id>`` it ingests with the managed identity (no instrumentation
key needed, local authentication can be disabled on the resource).

What is recorded: a span per ingest and per load with a child span per stage; the metrics
``pipeline.rows`` (by dataset and outcome: valid, rejected, duplicate), ``pipeline.files`` (by
dataset, stage and status) and ``pipeline.stage.duration`` (seconds, by stage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from opentelemetry import metrics, trace

from shared.app import settings

log = logging.getLogger("pipeline.telemetry")

tracer = trace.get_tracer("csv-pipeline")
meter = metrics.get_meter("csv-pipeline")
rows = meter.create_counter("pipeline.rows", unit="{row}", description="rows by outcome")
files = meter.create_counter("pipeline.files", unit="{file}", description="files by stage and status")
durations = meter.create_histogram("pipeline.stage.duration", unit="s", description="time per stage")


def _credential() -> Any:
    auth = settings.env("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") or ""
    parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId")
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


@cache
def configure() -> bool:
    """Start exporting to Application Insights if a connection string is set (once per process)."""
    if not settings.env("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(credential=_credential(), logger_name="pipeline")
    log.info("telemetry exported to Application Insights")
    return True


@contextmanager
def stage(name: str, timings: dict[str, float] | None = None, **attributes: Any) -> Iterator[Any]:
    """Time a stage into a span, the duration histogram and (optionally) a timings dict."""
    started = time.perf_counter()
    with tracer.start_as_current_span(name, attributes={k: v for k, v in attributes.items() if v is not None}) as span:
        try:
            yield span
        finally:
            took = time.perf_counter() - started
            durations.record(took, {"stage": name, **{k: v for k, v in attributes.items() if k == "dataset" and v}})
            if timings is not None:
                timings[name] = took


def count_rows(dataset: str, counts: dict[str, Any]) -> None:
    for outcome in ("valid", "rejected", "duplicate"):
        n = counts.get(f"rows_{outcome}") or 0
        if n:
            rows.add(n, {"dataset": dataset, "outcome": outcome})


def count_file(dataset: str, stage_name: str, status: str) -> None:
    files.add(1, {"dataset": dataset, "stage": stage_name, "status": status})
