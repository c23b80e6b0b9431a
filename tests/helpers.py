"""Small helpers shared by the tests: run the transform on CSV text with no Azure at all."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from shared.core import source, transform
from shared.core.contract import Contract, load_contract

ROOT = Path(__file__).resolve().parent.parent
BANK = load_contract(ROOT / "contracts" / "bank_transactions.toml")


def contract_from(tmp_path: Path, text: str, name: str = "c.toml") -> Contract:
    path = tmp_path / name
    path.write_text(text)
    return load_contract(path)


def transform_bytes(
    data: bytes, tmp_path: Path, contract: Contract = BANK, chunk_bytes: int = 32 * 1024 * 1024
) -> transform.Result:
    src = source.split(
        [data[i : i + 7919] for i in range(0, len(data), 7919)] or [b""],
        tmp_path / "chunks",
        delimiter=contract.dialect.delimiter,
        quote=contract.dialect.quote,
        encoding=contract.dialect.encoding,
        chunk_bytes=chunk_bytes,
    )
    return transform.run(contract, src, tmp_path / "out", transform.Lineage("test/x.csv", "run-1", "etag"))


def clean_rows(result: transform.Result) -> pl.DataFrame:
    """Every clean row of a run (in part files), in line order."""
    return pl.read_parquet(result.outputs.clean_parts).drop("_source_blob", "_run_id").sort("_line")


def rejects(result: transform.Result) -> pl.DataFrame:
    return pl.read_parquet(result.outputs.rejects).sort("line")
