"""What the Function App runs: the work behind each trigger of ``function_app.py``.

    triggers    the four entry points, with their clients built once per worker
    ingest      one raw blob through the core transform, its outputs and manifest published
    load        one load request into PostgreSQL, then the outputs nothing will read pruned
    reprocess   the nightly re-drive of whatever was missed or failed
    settings    every app setting, read here and passed inward
    retries     whether a failure is worth a retry
    logs        JSON lines with the run's context, secrets redacted
    telemetry   traces and metrics for Application Insights

Uses ``shared.core``, ``shared.storage`` and ``shared.postgres``; never ``shared.tools``
(``tests/test_architecture`` proves the Function App's import closure stays out of it, and
``.funcignore`` keeps the tools out of the deployment package).
"""
