"""`matchcast evaluate` on a small store: files written, tables printed, a run logged to a temp MLflow store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from matchcast.cli.main import app
from matchcast.config import Settings, get_settings
from matchcast.model.evaluate import OUTPUT_FILES
from matchcast.model.registry import EVALUATION_EXPERIMENT
from matchcast.service.evaluation import run_evaluation
from matchcast.service.wiring import registry_for
from tests.conftest import ingest_subset

pytestmark = pytest.mark.integration
pytest.importorskip("penaltyblog")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("eval-home")
    ingest_subset(Settings(home=home), leagues=("serie-a",), first_season=22)
    return home


@pytest.fixture
def env(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(__import__("os").environ):
        if name.startswith("MATCHCAST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MATCHCAST_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def test_evaluation_logs_a_run_with_its_files(home: Path, tmp_path: Path) -> None:
    settings = Settings(home=home)
    out = run_evaluation(settings, out=tmp_path / "ev", leagues=["serie-a"], start="2023-09-01", end="2023-11-30")
    assert out.run_id is not None
    assert sorted(p.name for p in out.files.values()) == sorted(OUTPUT_FILES)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry_for(settings).tracking_uri)
    run = client.get_run(out.run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == EVALUATION_EXPERIMENT
    pooled = out.evaluation.pooled()
    assert run.data.metrics["pooled_matchcast_rps"] == pytest.approx(pooled["matchcast_rps"])
    assert run.data.metrics["pooled_dc_rps"] < run.data.metrics["pooled_uniform_rps"]
    assert "pooled_rps_diff_vs_dc_se" in run.data.metrics
    assert run.data.params["leagues"] == "serie-a"
    logged = {a.path for a in client.list_artifacts(out.run_id)}
    assert set(OUTPUT_FILES) <= logged
    # The registered-model experiment is left alone: no model version appears.
    assert registry_for(settings).version_of("champion") is None


def test_cli_prints_the_tables_and_writes_the_files(env: Path, tmp_path: Path) -> None:
    window = ["--league", "serie-a", "--from", "2023-09-01", "--to", "2023-10-15"]
    result = CliRunner().invoke(
        app, ["evaluate", *window, "--out", str(tmp_path), "--no-mlflow"], prog_name="matchcast"
    )
    assert result.exit_code == 0, result.output
    for title in ("RPS (primary)", "log loss", "Brier", "accuracy", "Dixon-Coles", "frequency", "uniform"):
        assert title in result.output
    assert "pooled RPS difference matchcast - Dixon-Coles" in result.output
    frame = pd.read_csv(tmp_path / "predictions.csv")
    assert len(frame) > 20 and {"p_home", "dc_p_home", "freq_p_home", "uniform_p_home"} <= set(frame.columns)


def test_cli_refuses_a_bad_window(env: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--from", "2020/22", "--no-mlflow"], prog_name="matchcast")
    assert result.exit_code == 1
    assert "error: " in result.output and "season label" in result.output
    result = CliRunner().invoke(app, ["evaluate", "--league", "eredivisie", "--no-mlflow"], prog_name="matchcast")
    assert result.exit_code == 1 and "unknown league" in result.output
