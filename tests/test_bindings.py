"""The registered functions' bindings are exactly what the README's table says."""

from __future__ import annotations

import re
from pathlib import Path

import function_app
from shared.tools.runner import registered

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_table() -> dict[str, dict[str, str]]:
    text = README.read_text()
    section = text.split("## Functions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            name = cells[0].strip("`")
            rows[name] = {"trigger": cells[1], "connection": cells[3].strip("`"), "outputs": cells[4]}
    return rows


def describe(spec) -> dict[str, str]:
    t = spec.trigger
    if t["type"] == "blobTrigger":
        trigger = f"blobTrigger `{t['path']}` ({t['source']})"
    elif t["type"] == "queueTrigger":
        trigger = f"queueTrigger `{t['queueName']}`"
    else:
        trigger = f"timerTrigger `{t['schedule']}`"
    outputs = ", ".join(f"queue `{o['queueName']}`" for o in spec.outputs if o["type"] == "queue") or "—"
    return {"trigger": trigger, "connection": t.get("connection", "—"), "outputs": outputs}


def test_the_readme_lists_every_registered_function_with_its_bindings():
    documented = readme_table()
    actual = {spec.name: describe(spec) for spec in registered(function_app.app)}
    assert actual == documented


def test_outputs_share_the_trigger_connection_and_schedules_come_from_settings():
    for spec in registered(function_app.app):
        for out in spec.outputs:
            assert out["connection"] == "DataStorage"
        if spec.kind == "timerTrigger":
            assert re.fullmatch(r"%[A-Z_]+%", spec.trigger["schedule"]), "schedules are app settings, not literals"
            assert spec.trigger["runOnStartup"] is False


def test_the_local_settings_template_holds_emulator_values_only():
    import json

    values = json.loads((README.parent / "local.settings.json.template").read_text())["Values"]
    assert values["DataStorage"] == values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert "password" not in json.dumps(values).lower()
    assert values["REPROCESS_SCHEDULE"] == "0 0 2 * * *"
