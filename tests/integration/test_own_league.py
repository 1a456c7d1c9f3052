"""A league of the user's own, results only (no match statistics): ingest, evaluate, train, predict with markets."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from matchcast.cli.main import app
from matchcast.config import Settings, get_settings
from matchcast.data.ingest import bundled_files
from matchcast.service.bootstrap import train_model
from matchcast.service.prediction import PredictionService
from matchcast.service.wiring import registry_for, store_for
from tests.conftest import ingest_subset

pytestmark = pytest.mark.integration
pytest.importorskip("penaltyblog")
RESULTS_ONLY = ("Date", "HomeTeam", "AwayTeam", "FTHG", "FTAG", "FTR")


def results_only_files(folder: Path, league: str = "la-liga", first_season: int = 19) -> list[Path]:
    """Bundled seasons of ``league`` with every statistics column removed (half-time scores included)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in bundled_files():
        if p.parent.name != league or not first_season <= int(p.stem[-4:-2]) < 90:
            continue
        with p.open() as src:
            rows = [{k: r[k] for k in RESULTS_ONLY} for r in csv.DictReader(src)]
        target = folder / p.name
        with target.open("w", newline="") as dst:
            writer = csv.DictWriter(dst, fieldnames=RESULTS_ONLY)
            writer.writeheader()
            writer.writerows(rows)
        out.append(target)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("own-league")
    ingest_subset(Settings(home=home), leagues=("serie-a",), first_season=19)
    files = results_only_files(home / "files")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(__import__("os").environ):
            if name.startswith("MATCHCAST_"):
                mp.delenv(name)
        mp.setenv("MATCHCAST_HOME", str(home))
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["ingest", "--league", "my-league", *map(str, files)], prog_name="matchcast")
        assert result.exit_code == 0, result.output
        yield home
    get_settings.cache_clear()


def test_evaluate_a_results_only_league(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHCAST_HOME", str(home))
    get_settings.cache_clear()
    window = ["--league", "my-league", "--from", "2023/24", "--to", "2023/24", "--no-mlflow"]
    result = CliRunner().invoke(app, ["evaluate", *window, "--out", str(tmp_path)], prog_name="matchcast")
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "Goal markets" in printed and "Dixon-Coles grids refused" in printed
    frame = pd.read_csv(tmp_path / "predictions.csv")
    assert len(frame) > 300
    for col in ("p_over_2_5", "p_btts", "dc_p_over_2_5", "dc_p_btts", "freq_p_over_2_5", "uniform_p_btts"):
        assert frame[col].between(0, 1).all(), col
    goals = pd.read_csv(tmp_path / "goals_summary.csv")
    pooled = goals[(goals["league"] == "all") & (goals["season"] == "all")].iloc[0]
    for metric in ("ou25_log_loss", "btts_log_loss"):
        assert pooled[f"matchcast_{metric}"] < pooled[f"uniform_{metric}"] + 0.01  # sensible: near or beyond a coin
    assert pooled["matchcast_score_log_loss"] < pooled["uniform_score_log_loss"] - 1.0
    assert np.isfinite(goals.select_dtypes("number").to_numpy()).all()


def test_predictions_of_a_results_only_league_carry_sensible_markets(home: Path) -> None:
    settings = Settings(home=home)
    train_model(settings)
    store = store_for(settings)
    mine = [m.match_id for m in store.all_matches() if m.league == "my-league"][-50:]
    svc = PredictionService(store, registry_for(settings), "champion")
    out = svc.predict_many(mine)
    for pred in out.values():
        assert isinstance(pred, dict)
        xg = pred["expected_goals"]
        assert 0.3 < xg["home"] < 3.5 and 0.2 < xg["away"] < 3.0
        ou = {o["line"]: o["over"] for o in pred["markets"]["over_under"]}
        assert 0.2 < ou[2.5] < 0.8 and ou[0.5] > ou[1.5] > ou[2.5] > ou[3.5] > ou[4.5]
