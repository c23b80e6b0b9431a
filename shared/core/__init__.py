"""The pure core: a CSV file's bytes and its contract in, clean rows, rejects and aggregates out.

Nothing here talks to Azure or PostgreSQL or reads the environment (``tests/test_architecture``
fails if it does): polars, numpy and the standard library only, with files on local disk as
the one place it writes. Everything else in ``shared`` calls into this room, never the other
way round.

    contract      the dataset contract (TOML): columns, rules, de-duplication, aggregates
    rules         a column's rules as polars expressions: raw text in, typed value and reason out
    source        bytes in: decompress, decode, cut into record-aligned segments
    records       where each record starts and how many fields it has, from the bytes
    transform     the two passes: clean and reject, then de-duplicate and aggregate
    dictionary    a column's rules evaluated once per distinct raw text
    dedup         keep-first de-duplication in bounded memory (spill by key hash)
    aggregates    aggregates and column statistics computed in parts and merged exactly
    layout        containers, queues and the name of every output of a run
    documents     the manifest and the queue messages, typed and validated; the statuses
    manifest      building a run's manifest from what the transform did
    report        a run's quality report, HTML and text, from its manifest
    errors        the coded errors every room raises
    redaction     secrets out of text about to be logged
"""
