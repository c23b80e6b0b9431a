"""The command line's mistakes, as a person makes them: one line each, a distinct exit code, no
traceback, and within seconds when a service is down; and a ``--help`` that lists everything.

Commands run in-process (``cli.main``) with capsys, or as ``python -m shared`` where the process
itself is the point (a closed pipe, Ctrl-C, a runner that waits). "Unreachable" is a free port
of 127.0.0.1 with nothing listening.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.tools import cli, samples
from shared.tools.azurite import DEV_KEY, free_port
from tests.test_end_to_end import DATASET, blobs, upload

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"run", "demo", "upload", "status", "replay", "backfill", "forget", "process", "generate", "infer", "check", "report"}


def closed_storage() -> str:
    """A connection string to a storage account where nothing listens."""
    blob, queue = free_port(), free_port()
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;"
    )


def one_line_error(err: str) -> str:
    """The single line a failed command printed on stderr (and nothing else there)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def shared(*argv: object, env: dict[str, str] | None = None, **options: object) -> subprocess.Popen[str]:
    """``python -m shared ...`` as a child process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "shared", *map(str, argv)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        text=True,
        **options,  # type: ignore[call-overload]
    )


@pytest.fixture
def sample_csv(tmp_path: Path) -> Path:
    return samples.bank_transactions(tmp_path / "day.csv", 300, seed=1)


# --- services unreachable -------------------------------------------------------------------------


NEEDS_STORAGE = {
    "status": ["status"],
    "upload": ["upload", "{file}", "--dataset", DATASET],
    "replay": ["replay", "--blob", f"{DATASET}/x.csv"],
    "backfill": ["backfill", "--prefix", "x/"],
}


@pytest.mark.parametrize("argv", NEEDS_STORAGE.values(), ids=NEEDS_STORAGE.keys())
def test_a_command_with_storage_unreachable_fails_within_seconds_with_one_line(argv, pg_dsn, sample_csv, monkeypatch, capsys):
    monkeypatch.setenv("DataStorage", closed_storage())
    started = time.monotonic()
    code = cli.main([a.format(file=sample_csv) for a in argv])
    took = time.monotonic() - started
    line = one_line_error(capsys.readouterr().err)
    assert code == 4
    assert "storage unreachable" in line and "Azurite" in line and "DataStorage" in line
    assert took < 20, f"{took:.1f} s: the SDK's own retry policy (about 80 s) is back"


@pytest.mark.parametrize("problem", ["closed port", "no such database"])
def test_a_command_with_the_database_unreachable_fails_within_seconds_with_one_line_and_no_password(problem, monkeypatch, capsys):
    import psycopg

    from tests.conftest import BASE_DSN

    if problem == "closed port":
        dsn = psycopg.conninfo.make_conninfo(BASE_DSN, port=str(free_port()), password="s3cr3t")
    else:
        dsn = psycopg.conninfo.make_conninfo(BASE_DSN, dbname="no_such_database_here", password="s3cr3t")
    monkeypatch.setenv("POSTGRES_DSN", dsn)
    started = time.monotonic()
    code = cli.main(["status"])
    took = time.monotonic() - started
    line = one_line_error(capsys.readouterr().err)
    assert code == 5 and "database unreachable" in line and "POSTGRES_DSN" in line
    assert "s3cr3t" not in line
    assert took < 20


def test_the_runner_with_storage_unreachable_keeps_waiting_and_says_so_every_few_seconds():
    storage = closed_storage()
    runner = shared("run", "--once", env={"DataStorage": storage, "AzureWebJobsStorage": storage}, stdout=subprocess.PIPE)
    assert runner.stdout is not None
    said, started = [], time.monotonic()
    try:
        while len(said) < 3 and time.monotonic() - started < 60:
            line = runner.stdout.readline()
            if "unreachable" in line:
                said.append((time.monotonic() - started, line))
        assert runner.poll() is None, "the runner gave up: it should wait for storage like the host does"
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=30)
    assert len(said) == 3, said
    assert "storage still unreachable" in said[2][1] and "s so far" in said[2][1]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(said)]
    assert all(gap < 20 for gap in gaps), gaps


def test_ctrl_c_ends_a_waiting_runner_with_130_and_no_traceback():
    storage = closed_storage()
    env = {"DataStorage": storage, "AzureWebJobsStorage": storage}
    runner = shared("run", "--once", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert runner.stdout is not None
    assert "unreachable" in runner.stdout.readline()  # it is waiting
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


# --- contracts, pipes, bugs -------------------------------------------------------------------------


def test_a_broken_contract_is_one_line_naming_its_file_and_line_with_exit_3(tmp_path, sample_csv, monkeypatch, capsys):
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "bank_transactions.toml").write_text('[dataset]\nname = "bank_transactions"\nversion = "one"\n')
    monkeypatch.setenv("PIPELINE_CONTRACTS_DIR", str(folder))
    assert cli.main(["upload", str(sample_csv), "--dataset", DATASET]) == 3
    line = one_line_error(capsys.readouterr().err)
    assert "contract error" in line and "bank_transactions.toml" in line


@pytest.mark.parametrize("argv", [["status"], ["infer", "{file}"]], ids=["status", "infer"])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(argv, services, sample_csv):
    upload(services[0], f"{DATASET}/day.csv", sample_csv.read_bytes())
    child = shared(*[a.format(file=sample_csv) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # `| head` that has read what it wanted, before the command writes
    err = child.stderr.read()
    child.wait(timeout=60)
    assert child.returncode == 141, err
    assert err == ""


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    from shared.tools import operations

    def broken(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(operations, "cmd_status", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["status"])


# --- arguments --------------------------------------------------------------------------------------


def test_status_since_yesterday_is_argparses_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--since", "yesterday"])
    assert exit_.value.code == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--since" in line and "'yesterday'" in line and "30m, 24h or 7d" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run", "--workers", "0"], "--workers: expected at least 1, not 0"),
        (["replay", "--dataset", "d", "--since", "May"], "ISO date"),
    ],
)
def test_a_malformed_option_value_is_argparses_one_line_with_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and says in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("name", "says"),
    [("missing.csv", "no such file"), ("book.xlsx", "not a .csv or .csv.gz"), ("folder.csv", "is not a file")],
)
def test_upload_of_a_file_the_pipeline_cannot_read_is_refused_with_one_line(name, says, tmp_path, capsys):
    if name == "book.xlsx":
        (tmp_path / name).write_bytes(b"PK\x03\x04")
    if name == "folder.csv":
        (tmp_path / name).mkdir()
    assert cli.main(["upload", str(tmp_path / name), "--dataset", DATASET]) == 2
    assert says in one_line_error(capsys.readouterr().err)


def test_upload_into_a_dataset_folder_without_a_contract_is_refused_and_nothing_lands(storage_clean, sample_csv, capsys):
    assert cli.main(["upload", str(sample_csv), "--dataset", "nosuch"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "no contract for dataset 'nosuch'" in line and "unknown_dataset" in line and "infer" in line
    raw = blobs(storage_clean).get_container_client("raw")
    assert not raw.exists() or not list(raw.list_blobs())


def test_generate_into_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["generate", "--rows", "10", "--out", str(tmp_path / "file" / "x.csv")]) == 2
    assert "cannot write" in one_line_error(capsys.readouterr().err)


# --- help ---------------------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse has no public way to walk its subparsers
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_every_option_has_help_text():
    parser = cli.build_parser()
    commands = subcommands(parser)
    assert set(commands) == COMMANDS
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert all(choice.help for choice in action._choices_actions), "a command without a one-line help"
    missing = [
        f"{name} {option.dest}"
        for name, sub in commands.items()
        for option in sub._actions
        if not isinstance(option, argparse._HelpAction) and not option.help
    ]
    assert missing == []


def test_the_top_level_help_lists_all_twelve_commands_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.split("commands:")[1].split("exit codes:")[0].splitlines()[1:] if line.strip()}
    assert listed >= COMMANDS
    for code in ("  2  ", "  3  ", "  4  ", "  5  ", "130  ", "141  "):
        assert code in out
