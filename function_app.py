"""The Function App's table of contents: four triggers, each a few lines that call ``shared/``.

    raw/{name} ──(blob, Event Grid)──▶ ingest ──▶ load-requests ──(queue)──▶ load ──▶ PostgreSQL
    nightly timer ──▶ reprocess ──▶ ingest-requests ──(queue)──▶ ingest_request ──▶ load-requests

Bindings use the ``DataStorage`` connection (``UseDevelopmentStorage=true`` locally; an
identity-based connection in Azure). ``ingest`` receives a storage SDK ``BlobClient`` (the
SDK-type binding), so a large blob is streamed, never loaded whole into memory.
"""

import azure.functions as func
from azurefunctions.extensions.bindings import blob

from shared.app import triggers

app = func.FunctionApp()


@app.function_name("ingest")
@app.blob_trigger(arg_name="client", path="raw/{name}", connection="DataStorage", source="EventGrid")
@app.queue_output(arg_name="loads", queue_name="load-requests", connection="DataStorage")
def ingest(client: blob.BlobClient, loads: func.Out[str]) -> None:
    loads.set(triggers.ingest_blob(client))


@app.function_name("ingest_request")
@app.queue_trigger(arg_name="msg", queue_name="ingest-requests", connection="DataStorage")
@app.queue_output(arg_name="loads", queue_name="load-requests", connection="DataStorage")
def ingest_request(msg: func.QueueMessage, loads: func.Out[str]) -> None:
    request = triggers.ingest_requested(msg.get_body().decode("utf-8"))
    if request:
        loads.set(request)


@app.function_name("load")
@app.queue_trigger(arg_name="msg", queue_name="load-requests", connection="DataStorage")
def load(msg: func.QueueMessage) -> None:
    triggers.load_requested(msg.get_body().decode("utf-8"), msg.dequeue_count or 1)


@app.function_name("reprocess")
@app.timer_trigger(arg_name="timer", schedule="%REPROCESS_SCHEDULE%", run_on_startup=False, use_monitor=True)
@app.queue_output(arg_name="requests", queue_name="ingest-requests", connection="DataStorage")
def reprocess(timer: func.TimerRequest, requests: func.Out[list[str]]) -> None:
    requests.set(triggers.nightly(past_due=timer.past_due))
