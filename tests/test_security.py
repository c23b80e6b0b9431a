"""Names from outside never become paths, SQL or shell: odd blob names are handled safely."""

from __future__ import annotations

import re

import pytest

from shared.core import layout
from shared.core.contract import IDENTIFIER
from shared.storage.blobs import FolderStore
from tests.test_end_to_end import DATASET, ledger, names, run_host, upload

ODD_NAMES = [
    f"{DATASET}/../../etc/passwd.csv",
    f"{DATASET}/ğüş 🙂 ünïcödé.csv",
    f"{DATASET}/" + "x" * 900 + ".csv",
    f"{DATASET}/a/b/c/'; DROP TABLE pipeline.ledger; --.csv",
    f"{DATASET}/\u202e.vsc.csv",  # right-to-left override
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_output_names_are_safe_readable_and_unique(name):
    key = layout.source_key(name)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,93}", key), key
    assert ".." not in key and "/" not in key
    assert layout.source_key(name) == key  # stable
    assert all(layout.source_key(other) != key for other in ODD_NAMES if other != name)
    paths = layout.run_paths(name, "20260101T000000000Z-abcd", DATASET)
    for _container, blob in (paths.clean, paths.manifest, paths.rejects, paths.quarantined_copy(name)):
        assert ".." not in blob.split("/") and len(blob) < 300


def test_dataset_names_are_strict_identifiers():
    assert layout.dataset_of("bank_transactions/x.csv") == "bank_transactions"
    for bad in ("Bank/x.csv", "bank-transactions/x.csv", "../x.csv", "a;drop/x.csv", "x.csv", "é/x.csv"):
        assert layout.dataset_of(bad) is None
    assert IDENTIFIER.match("a" * 63) and not IDENTIFIER.match("a" * 64)


def test_a_folder_store_never_writes_outside_its_root(tmp_path):
    store = FolderStore(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        store.upload_bytes("raw", "../../outside.csv", b"x")
    assert not (tmp_path / "outside.csv").exists()


def test_odd_names_flow_through_the_pipeline_and_the_ledger_keeps_them_exactly(services):
    azurite, dsn = services
    body = b"Date,Domain,Location,Value,Transaction_count\n1/1/2022,RETAIL,Goa,5,1\n"
    odd = [n for n in ODD_NAMES if "/../" not in n]  # the storage service normalises '..' segments itself
    for name in odd:
        upload(azurite, name, body)

    stats = run_host()

    assert stats.failures == 0
    assert sorted(r["source_blob"] for r in ledger(dsn)) == sorted(odd)
    assert all(r["status"] == "loaded" for r in ledger(dsn))
    for blob in names(azurite, "curated"):
        assert ".." not in blob.split("/")
