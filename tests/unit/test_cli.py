"""The command line: --help everywhere, progress bars, and one clear line (no traceback) for every mistake."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from matchcast.cli.main import app
from matchcast.config import get_settings
from matchcast.data.ingest import bundled_files

runner = CliRunner()


def invoke(args: list[str]) -> Result:
    return runner.invoke(app, args, prog_name="matchcast")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh home for each test, and settings read again from the environment."""
    for name in list(__import__("os").environ):
        if name.startswith("MATCHCAST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MATCHCAST_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def command_paths() -> list[list[str]]:
    """Every command and sub-command, as argument lists."""
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def one_error_line(result: Result) -> str:
    out = result.output
    assert "Traceback" not in out, out
    # Log records (libraries' INFO lines, timestamped) may come first; what the CLI itself says is one line.
    lines = [line for line in out.splitlines() if line.strip() and not re.match(r"\d{4}[-/]\d\d[-/]\d\d ", line)]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: "), out
    return lines[0]


def test_every_command_has_help() -> None:
    paths = command_paths()
    assert {"ingest", "train", "api", "worker", "up", "ui", "flower"} <= {p[0] for p in paths if p}
    for path in paths:
        result = invoke([*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output and "--help" in result.output, path


def test_no_arguments_shows_the_help() -> None:
    result = invoke([])
    assert "Usage:" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["frobnicate"], 2, "No such command 'frobnicate'"),
        (["api", "--nope"], 2, "No such option: --nope (see `matchcast api --help`)"),
        (["ingest", "--as-of", "2026-13-01"], 2, "'2026-13-01' is not a date (YYYY-MM-DD)"),
        (["ingest", "missing.csv"], 2, "'missing.csv' does not exist"),
        (["ui", "--port", "0"], 2, "Invalid value for '--port': Input should be greater than or equal to 1"),
        (["api", "--port", "http"], 2, "Invalid value for '--port': Input should be a valid integer"),
    ],
)
def test_usage_mistakes_give_one_line(args: list[str], code: int, expected: str) -> None:
    result = invoke(args)
    assert result.exit_code == code
    assert expected in one_error_line(result)


def test_an_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHCAST_API_PORT", "99999")
    result = invoke(["train"])
    assert result.exit_code == 2
    assert "MATCHCAST_API_PORT: Input should be less than or equal to 65535" in one_error_line(result)


def test_a_malformed_file_is_refused_with_its_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\nE0,32/13/2024,A,B,1,0,H\n")
    result = invoke(["ingest", str(bad)])
    assert result.exit_code == 1
    assert "bad.csv" in one_error_line(result)


def test_training_an_empty_store_is_refused() -> None:
    result = invoke(["train"])
    assert result.exit_code == 1
    assert "run `matchcast ingest` first" in one_error_line(result)


def test_retraining_an_empty_store_or_with_a_bad_date_is_refused() -> None:
    assert "retrain" in {p[0] for p in command_paths() if p}
    result = invoke(["retrain"])
    assert result.exit_code == 1
    assert "run `matchcast ingest` first" in one_error_line(result)
    result = invoke(["retrain", "--from", "2026-02-30"])
    assert result.exit_code == 2 and "'2026-02-30' is not a date (YYYY-MM-DD)" in one_error_line(result)
    result = invoke(["retrain", "--weeks", "0"])
    assert result.exit_code == 2 and "--weeks" in one_error_line(result)


def _listening() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def test_taken_ports_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    s, port = _listening()
    with s:
        result = invoke(["ui", "--port", str(port)])
        assert result.exit_code == 1
        assert f"UI port {port} on 127.0.0.1 is taken" in one_error_line(result)
        result = invoke(["flower", "--port", str(port)])
        assert result.exit_code == 1
        assert f"port {port} on 127.0.0.1 is taken" in one_error_line(result)
        monkeypatch.setenv("MATCHCAST_UI_PORT", str(port))
        monkeypatch.setenv("MATCHCAST_API_PORT", str(_free_port()))
        get_settings.cache_clear()
        result = invoke(["up"])
        assert result.exit_code == 1
        assert f"UI port {port} is taken; set MATCHCAST_UI_PORT (0 starts no UI)" in one_error_line(result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ingest_and_train_show_progress(home: Path) -> None:
    files = [
        str(p)
        for p in bundled_files()
        if p.parent.name == "premier-league" and p.stem[-4:] in {"2223", "2324", "2425", "2526"}
    ]
    result = invoke(["ingest", *files, "--as-of", "2026-04-01"])
    assert result.exit_code == 0, result.output
    assert "reading files" in result.output and "4/4" in result.output
    assert "saving matches" in result.output and "computing features" in result.output
    assert "4 files, 1520 matches: 1520 new" in result.output
    result = invoke(["train"])
    assert result.exit_code == 0, result.output
    assert "training: done" in result.output and "4/4" in result.output
    assert "heldout_rps" in result.output and "held-out season 2024/25" in result.output


def test_the_ui_is_started_with_its_settings(home: Path) -> None:
    from matchcast.cli.stack import ui_command, ui_env
    from matchcast.config import Settings

    settings = Settings(home=home, api_port=8123, ui_port=8600, ui_api_key="k")  # type: ignore[arg-type]
    cmd = ui_command(settings)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]).name == "app.py" and Path(cmd[4]).is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8600" and cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    env = ui_env(settings)
    assert (env["MATCHCAST_UI_API_URL"], env["MATCHCAST_UI_API_KEY"], env["MATCHCAST_HOME"]) == (
        "http://127.0.0.1:8123",
        "k",
        str(home),
    )
    assert Settings(api_host="0.0.0.0", api_port=9000).resolved_ui_api_url() == "http://127.0.0.1:9000"
    assert Settings(ui_api_url="http://api.example:8000/").resolved_ui_api_url() == "http://api.example:8000"
