"""Pydantic models of what crosses a boundary: requests, predictions, task status, listings."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TeamName = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineFeatures(_Strict):
    """The model's features for one match; each field bounded. Field order is the model's column order."""

    elo_home: float = Field(ge=800, le=2400, description="Home team's Elo rating before the match")
    elo_away: float = Field(ge=800, le=2400, description="Away team's Elo rating before the match")
    form_points_home: float = Field(ge=0, le=3, description="Home team's weighted recent points per match")
    form_points_away: float = Field(ge=0, le=3, description="Away team's weighted recent points per match")
    goals_for_home: float = Field(ge=0, le=10, description="Home team's weighted recent goals scored")
    goals_against_home: float = Field(ge=0, le=10, description="Home team's weighted recent goals conceded")
    goals_for_away: float = Field(ge=0, le=10, description="Away team's weighted recent goals scored")
    goals_against_away: float = Field(ge=0, le=10, description="Away team's weighted recent goals conceded")
    sot_for_home: float = Field(ge=0, le=30, description="Home team's weighted shots on target")
    sot_against_home: float = Field(ge=0, le=30, description="Home team's weighted shots on target conceded")
    sot_for_away: float = Field(ge=0, le=30, description="Away team's weighted shots on target")
    sot_against_away: float = Field(ge=0, le=30, description="Away team's weighted shots on target conceded")
    rest_days_home: float = Field(ge=0, le=30, description="Days since the home team's last match (capped)")
    rest_days_away: float = Field(ge=0, le=30, description="Days since the away team's last match (capped)")
    league_home_adv: float = Field(ge=-2, le=2, description="League's recent mean goal difference at home")
    league_draw_rate: float = Field(ge=0, le=1, description="League's recent share of draws")


FEATURE_NAMES: tuple[str, ...] = tuple(InlineFeatures.model_fields)


class InlinePredictionRequest(_Strict):
    """``POST /predict/``: features given inline, with optional labels for the answer."""

    features: InlineFeatures
    home_team: TeamName | None = None
    away_team: TeamName | None = None
    date: dt.date | None = None


class AsyncPredictionRequest(_Strict):
    """``POST /predict/async/``."""

    match_id: int = Field(ge=1, le=2**31 - 1)


class Probabilities(BaseModel):
    """Outcome probabilities; they sum to 1."""

    home: float = Field(ge=0, le=1)
    draw: float = Field(ge=0, le=1)
    away: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> Probabilities:
        if abs(self.home + self.draw + self.away - 1.0) > 1e-6:
            raise ValueError("probabilities must sum to 1")
        return self


class Prediction(BaseModel):
    """One prediction, as returned by both modes."""

    match_id: int | None = None
    league: str | None = None
    home_team: str | None = None
    away_team: str | None = None
    date: dt.date | None = None
    probabilities: Probabilities
    model_name: str
    model_version: str
    feature_version: str | None = None
    predicted_at: dt.datetime


class AsyncSubmitted(BaseModel):
    """Answer of ``POST /predict/async/``."""

    task_id: str
    status: Literal["submitted"] = "submitted"
    status_url: str


TaskState = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]


class TaskStatus(BaseModel):
    """Answer of ``GET /monitoring/task_status/{task_id}``; Celery's state names."""

    task_id: str
    status: TaskState
    result: Prediction | None = None
    error: str | None = None


class MatchOut(BaseModel):
    """A match in listings."""

    match_id: int
    league: str
    season: str
    date: dt.date
    home_team: str
    away_team: str
    home_goals: int | None = None
    away_goals: int | None = None
    result: str | None = None


class MatchPage(BaseModel):
    """A page of matches."""

    total: int
    limit: int
    offset: int
    items: list[MatchOut]


class ModelInfo(BaseModel):
    """Registry metadata of the serving model."""

    name: str
    version: str
    alias: str
    run_id: str | None
    created_at: dt.datetime | None
    training_window: dict[str, Any]
    feature_names: list[str]
    feature_version: str | None
    metrics: dict[str, float]


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable type and a sentence for people."""

    type: str
    detail: Any


class Readiness(BaseModel):
    """Answer of ``GET /ready``."""

    ready: bool
    checks: dict[str, str]
    missing: list[str]
