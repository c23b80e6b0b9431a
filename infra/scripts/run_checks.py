"""The infrastructure checks behind scripts/check-infra; run with the .venv-infra interpreter.

1. Every ``.bicep`` file under ``infra/`` parses with pycep-parser (the parser checkov uses: a
   file it cannot parse is silently left out of the scan, so this comes first).
2. checkov scans ``infra/`` (Bicep) and the two CI definitions (GitHub Actions, Azure
   Pipelines): no failed check, no parsing error. A check may only be suppressed next to its
   resource, ``// checkov:skip=<ID>: <reason>``, and the reason must say something.
3. No stale suppression: checkov runs again on a copy without the ``checkov:skip`` lines, and a
   suppressed check that passes there is reported (the suppression should go).

``--dump-json`` prints every Bicep file parsed, and the YAML files the tests compare with them
(azure.yaml and the CI definitions), as JSON keyed by path, for tests/test_infra.py (the app's
virtualenv has neither pycep nor PyYAML).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PIPELINES = [ROOT / "azure-pipelines.yml", *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]
SKIP_LINE = re.compile(r"^\s*//\s*checkov:skip=")
MIN_REASON = 20  # characters: "reason" must be a sentence, not "ok"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_all() -> tuple[dict[str, dict], dict[str, str]]:
    parser = BicepParser()
    parsed, errors = {}, {}
    for path in bicep_files():
        rel = str(path.relative_to(ROOT))
        try:
            parsed[rel] = parser.parse(text=path.read_text())
        except Exception as error:  # noqa: BLE001 - lark raises many types; all mean "does not parse"
            errors[rel] = str(error).strip().splitlines()[0]
    return parsed, errors


def checkov(args: list[str], log: Path) -> list[dict]:
    """Run checkov with JSON output; its log (tracebacks of checks that crash on an expression
    they cannot evaluate) goes to ``log``. One report per framework."""
    command = [sys.executable, "-m", "checkov.main", "--skip-download", "--output", "json", *args]
    with log.open("a") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
    if not done.stdout.strip():
        raise SystemExit(f"checkov printed nothing (exit {done.returncode}); see {log}")
    report = json.loads(done.stdout)
    return report if isinstance(report, list) else [report]


def results(reports: list[dict], kind: str) -> list[dict]:
    out = []
    for report in reports:
        out.extend(report.get("results", {}).get(kind, []))
    return out


def key(check: dict) -> tuple[str, str, str]:
    return (check["check_id"], Path(check["file_path"]).name, check["resource"])


def main() -> int:
    if sys.argv[1:] == ["--dump-json"]:
        import yaml

        parsed, errors = parse_all()
        documents = {
            str(p.relative_to(ROOT)): yaml.safe_load(p.read_text()) for p in [ROOT / "azure.yaml", *PIPELINES] if p.exists()
        }
        json.dump({"bicep": parsed, "errors": errors, "yaml": documents}, sys.stdout, default=str)
        return 0

    problems: list[str] = []

    parsed, errors = parse_all()
    print(f"Bicep: {len(parsed)} of {len(parsed) + len(errors)} files parse")
    problems += [f"{path} does not parse: {error}" for path, error in errors.items()]

    log = Path(tempfile.gettempdir()) / "check-infra-checkov.log"
    log.write_text("")
    pipeline_args = [a for p in PIPELINES if p.exists() for a in ("--file", str(p))]
    reports = checkov(["--directory", str(INFRA), "--framework", "bicep"], log)
    if pipeline_args:
        reports += checkov([*pipeline_args, "--framework", "github_actions", "azure_pipelines"], log)

    for report in reports:
        summary = report.get("summary", {})
        print(
            f"checkov {report.get('check_type')}: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, "
            f"{summary.get('skipped', 0)} suppressed, {summary.get('parsing_errors', 0)} parsing errors, "
            f"{summary.get('resource_count', 0)} resources"
        )
        if summary.get("parsing_errors"):
            problems.append(f"checkov could not parse: {results([report], 'parsing_errors')}")
    if not any(r.get("check_type") == "bicep" and r.get("summary", {}).get("resource_count") for r in reports):
        problems.append("checkov saw no Bicep resource: is infra/ empty?")

    for check in results(reports, "failed_checks"):
        first, last = check.get("file_line_range") or ["?", "?"]
        where = f"{check['file_path']}:{first}-{last}"
        problems.append(f"{check['check_id']} failed on {check['resource']} ({where}): {check['check_name']}")

    suppressed = results(reports, "skipped_checks")
    for check in suppressed:
        reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
        print(f"  suppressed {check['check_id']} on {check['resource']}: {reason}")
        if len(reason) < MIN_REASON:
            problems.append(f"{check['check_id']} on {check['resource']} is suppressed without a reason")

    # Stale suppressions: scan a copy of infra/ with the checkov:skip lines removed.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "infra"
        shutil.copytree(INFRA, copy)
        for path in copy.rglob("*.bicep"):
            path.write_text("".join(line for line in path.read_text().splitlines(True) if not SKIP_LINE.match(line)))
        bare = checkov(["--directory", str(copy), "--framework", "bicep"], log)
    passed_bare = {key(c) for c in results(bare, "passed_checks")}
    failed_bare = {key(c) for c in results(bare, "failed_checks")}
    for check in suppressed:
        if check.get("check_type", "bicep") != "bicep" and not check["file_path"].endswith(".bicep"):
            continue
        if key(check) in passed_bare:
            problems.append(f"{check['check_id']} on {check['resource']} passes without its suppression: remove it")
        elif key(check) not in failed_bare:
            print(f"  note: checkov could not evaluate {check['check_id']} on {check['resource']} (see {log})")

    if problems:
        print("\nInfrastructure checks FAILED:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("Infrastructure checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
