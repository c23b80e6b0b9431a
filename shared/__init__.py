"""The pipeline's package, in five rooms; data and imports flow one way, from tools to core:

    tools ──▶ app ──▶ storage ──▶ core
                 └──▶ postgres ──┘

    core       pure: contracts, the transform, the documents (no Azure, no PostgreSQL, no environment)
    storage    the Azure Blob and Queue edge
    postgres   the PostgreSQL edge
    app        what the Function App's triggers run
    tools      the command line, the local runner, samples: never deployed

See ``docs/architecture.md`` for which room a new feature belongs in.
"""

__version__ = "0.1.0"
