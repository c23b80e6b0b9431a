"""Operator and developer tools: never deployed, never imported by the Function App.

    cli                 ``python -m shared``: the parser, the commands that run the pipeline locally
    operations          status, replay, backfill, forget
    contract_commands   infer, check, report
    inference           drafting a contract from a sample file
    runner              the local stand-in for the Functions host (Core Tools cannot be installed everywhere)
    samples             deterministic seed-shaped sample files
    azurite             a private Azurite on free ports, for the tests and the benchmarks
    progress            a one-line progress bar

May use every other room; ``.funcignore`` leaves this folder (and ``shared/__main__.py``) out of
the deployment package.
"""
