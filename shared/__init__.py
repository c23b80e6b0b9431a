"""The pipeline's own package: contracts, transform, load, ledger and the local runner."""

__version__ = "0.1.0"
