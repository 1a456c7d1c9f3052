"""The deployment recipes in deploy/ parse, and every matchcast command they run exists.

Validated here, not run: no container engine or init system runs on this machine. The systemd units go through
``systemd-analyze verify`` (their ExecStart pointed at this checkout's ``matchcast``) and a real INI parser; the
compose file through the compose_spec parser (the Compose Specification, strict: unknown keys and values are
refused) and PyYAML; the Dockerfile through dockerfile-parse. Each matchcast command line is run with ``--help``.
"""

from __future__ import annotations

import configparser
import io
import json
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose
from dockerfile_parse import DockerfileParser

from matchcast.tasks.names import LANES
from tests.conftest import need

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/matchcast/venv/bin/matchcast"  # where the units expect matchcast
MATCHCAST = str(Path(sys.executable).with_name("matchcast"))


@cache
def _help_ok(*command: str) -> bool:
    return subprocess.run([MATCHCAST, *command, "--help"], capture_output=True, timeout=120).returncode == 0


def check_command(argv: list[str]) -> None:
    """``argv`` (after ``matchcast``) is a command this matchcast has, with a lane it knows."""
    assert argv, "no matchcast command"
    lane = argv[argv.index("--lane") + 1] if "--lane" in argv else None
    assert _help_ok(argv[0]), f"matchcast has no command {argv[0]!r}"
    if lane is not None:
        assert lane in LANES, f"unknown lane {lane!r}"


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_units_exist_for_every_process_kind() -> None:
    names = {p.stem for p in UNITS}
    assert names == {
        "matchcast-api",
        "matchcast-worker-interactive",
        "matchcast-worker-bulk",
        "matchcast-worker-maintenance",
        "matchcast-beat",
        "matchcast-ui",
    }
    assert (DEPLOY / "systemd" / "matchcast.env").exists()


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.stem)
def test_systemd_unit(path: Path) -> None:
    u = unit(path)
    service = u["Service"]
    assert service["User"] not in ("root", "0") and service["EnvironmentFile"] == "/etc/matchcast/matchcast.env"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED
    if argv[1] == "worker":
        # A drain needs SIGTERM to reach the main process only, and time for the grace period (20 s) first.
        assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
        assert float(service["TimeoutStopSec"]) > 20 + 10
        assert argv[argv.index("--lane") + 1] in path.stem
    check_command(argv[1:])


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    need("systemd-analyze (Debian: systemd)", tool is not None)
    assert tool is not None
    for path in UNITS:
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, MATCHCAST))
    done = subprocess.run(
        [tool, "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    mine = [line for line in (done.stdout + done.stderr).splitlines() if str(tmp_path) in line or ".service" in line]
    assert not mine, mine  # e.g. "Unknown key 'KillMod' in section [Service], ignoring." is only a warning


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit with an unknown key and one whose program is missing."""
    tool = shutil.which("systemd-analyze")
    need("systemd-analyze (Debian: systemd)", tool is not None)
    assert tool is not None
    text = (DEPLOY / "systemd" / "matchcast-worker-bulk.service").read_text()
    (tmp_path / "typo.service").write_text(text.replace(INSTALLED, MATCHCAST).replace("KillMode=", "KillMod="))
    (tmp_path / "missing.service").write_text(text)  # /opt/matchcast/venv/bin/matchcast is not on this machine
    typo = subprocess.run([tool, "verify", str(tmp_path / "typo.service")], capture_output=True, text=True)
    assert "Unknown key" in typo.stderr
    missing = subprocess.run([tool, "verify", str(tmp_path / "missing.service")], capture_output=True, text=True)
    assert missing.returncode != 0


def _dockerfile() -> list[dict[str, str]]:
    """The Dockerfile's instructions as dockerfile-parse reads them."""
    return list(DockerfileParser(fileobj=io.BytesIO((DEPLOY / "Dockerfile").read_bytes())).structure)


def test_dockerfile_runs_one_matchcast_process_as_a_user_with_a_health_check() -> None:
    structure = _dockerfile()
    last_from = max(i for i, s in enumerate(structure) if s["instruction"] == "FROM")
    final = [s for s in structure[last_from:] if s["instruction"] != "COMMENT"]
    by = {s["instruction"]: [x["value"] for x in final if x["instruction"] == s["instruction"]] for s in final}
    assert by["USER"] and by["USER"][-1].split(":")[0] not in ("root", "0")
    assert len(by.get("CMD", [])) == 1 and len(by.get("ENTRYPOINT", [])) == 1 and len(by["HEALTHCHECK"]) == 1
    assert "/health" in by["HEALTHCHECK"][0]
    assert json.loads(by["ENTRYPOINT"][0]) == ["matchcast"]
    check_command(json.loads(by["CMD"][0]))
    assert by["STOPSIGNAL"] == ["SIGTERM"]


def _compose() -> dict[str, object]:
    text = (DEPLOY / "compose.yaml").read_text()
    PyCompose.from_yaml(text)  # raises ValueError naming the key and line of anything off the spec
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_compose_file_follows_the_spec_and_wires_every_probe() -> None:
    services: dict[str, dict[str, object]] = _compose()["services"]  # type: ignore[assignment]
    assert {"rabbitmq", "redis", "postgres", "mlflow", "api", "beat", "ui", "prometheus"} <= set(services)
    lanes = {
        str(s["command"][s["command"].index("--lane") + 1])  # type: ignore[index,union-attr]
        for s in services.values()
        if s.get("image") == "matchcast:latest" and s["command"][0] == "worker"  # type: ignore[index]
    }
    assert lanes == {"interactive", "bulk", "maintenance"}
    for name, s in services.items():
        for dep, cond in (s.get("depends_on") or {}).items():  # type: ignore[union-attr]
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
            if cond["condition"] == "service_healthy":
                assert not services[dep]["healthcheck"].get("disable"), f"{dep} has no probe to wait for"  # type: ignore[union-attr]
        health = s["healthcheck"]
        assert isinstance(health, dict)
        one_shot = s.get("restart") == "no"
        assert health.get("disable") is True if (one_shot or name == "beat") else health["test"][0] == "CMD"
        if s.get("image") != "matchcast:latest":
            continue
        command = s["command"]
        assert isinstance(command, list), f"{name}: one process, no shell"
        if command[0] == "worker":
            assert s["stop_signal"] == "SIGTERM" and int(str(s["stop_grace_period"]).rstrip("s")) > 20 + 10
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])  # type: ignore[index]
    assert services["ui"]["depends_on"]["api"]["condition"] == "service_healthy"  # type: ignore[index]


@pytest.mark.parametrize(
    "service",
    ["ingest", "train", "api", "worker-interactive", "worker-bulk", "worker-maintenance", "beat", "ui"],
)
def test_compose_commands_are_matchcast_commands(service: str) -> None:
    services: dict[str, dict[str, object]] = _compose()["services"]  # type: ignore[assignment]
    check_command(list(services[service]["command"]))  # type: ignore[call-overload]


def test_compose_parser_refuses_what_is_off_the_spec() -> None:
    """The spec check can fail: an unknown restart policy and an unknown key."""
    text = (DEPLOY / "compose.yaml").read_text()
    for broken in (
        text.replace("restart: unless-stopped", "restart: sometimes", 1),
        text.replace("retries:", "retrys:", 1),
    ):
        with pytest.raises(ValueError):
            PyCompose.from_yaml(broken)


def test_prometheus_config_of_the_compose_file_loads() -> None:
    tool = shutil.which("promtool")
    config = DEPLOY / "prometheus" / "compose.yml"
    assert yaml.safe_load(config.read_text())["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:8000"]
    need("promtool (Debian: prometheus)", tool is not None)
    assert tool is not None
    done = subprocess.run([tool, "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
