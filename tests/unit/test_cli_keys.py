"""``matchcast keys``, the first-start key of ``matchcast up``, and the loopback rule of ``MATCHCAST_AUTH=off``."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from matchcast.cli.keys import announce_auth
from matchcast.cli.main import app
from matchcast.config import Settings, get_settings
from matchcast.errors import InvalidInput
from matchcast.service.auth import key_service_for


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("MATCHCAST_DATABASE_URL", "MATCHCAST_AUTH", "MATCHCAST_API_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MATCHCAST_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_create_list_revoke(home: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--role", "predict", "--name", "dashboard"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"mc_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    key_id = token.split("_")[1]
    info = key_service_for(Settings(home=home)).verify(token)
    assert info is not None and info.role == "predict" and info.name == "dashboard"

    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and key_id in listed.stdout and "dashboard" in listed.stdout
    assert token not in listed.stdout

    revoked = runner.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert key_service_for(Settings(home=home)).verify(token) is None
    assert runner.invoke(app, ["keys", "revoke", "000000000000"]).exit_code == 1


def test_create_refuses_unknown_roles(home: Path) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--role", "root"])
    assert result.exit_code == 2
    assert key_service_for(Settings(home=home)).list() == []


def test_up_announces_the_first_start_key_once(home: Path) -> None:
    settings = Settings(home=home)
    out = io.StringIO()
    token = announce_auth(settings, Console(file=out, width=40))
    assert token and f"X-API-Key: {token}" in out.getvalue()  # never wrapped, whatever the width
    again = io.StringIO()
    assert announce_auth(settings, Console(file=again, width=40)) == token
    assert token not in again.getvalue() and "admin.key" in again.getvalue()


def test_auth_off_runs_open_on_loopback_only(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert announce_auth(Settings(home=home, auth="off"), Console(file=out)) is None
    assert "runs open" in out.getvalue() and not (home / "admin.key").exists()
    with pytest.raises(InvalidInput):
        announce_auth(Settings(home=home, auth="off", api_host="0.0.0.0"), Console(file=io.StringIO()))
    monkeypatch.setenv("MATCHCAST_AUTH", "off")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["api", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 1 and "MATCHCAST_AUTH=off" in result.output
