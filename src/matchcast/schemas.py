"""Pydantic models of what crosses a boundary: requests, predictions, task and batch status, listings.

Past 400 lines on purpose: every model that crosses a boundary in one module, so a request, the answer and the
status a client polls (or streams) are read side by side; split by endpoint, they would import each other.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from typing_extensions import TypedDict

TeamName = Annotated[str, Field(min_length=1, max_length=64)]


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 7 and 7.0, but not true, "7" or 7.5."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MATCH_ID_MAX = 2**31 - 1  # match ids are PostgreSQL integers: 1 .. 2**31 - 1
# The bounds before the validator: in this order they become the JSON Schema's minimum and maximum.
MatchId = Annotated[int, Field(ge=1, le=MATCH_ID_MAX), BeforeValidator(_json_integer)]


def _iso_date(value: Any) -> Any:
    """Dates as ``YYYY-MM-DD`` only: pydantic would also read a number such as ``0.0`` as a Unix time."""
    if isinstance(value, dt.date):
        return value
    if not (isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-"):
        raise ValueError("a date must read YYYY-MM-DD")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineFeatures(_Strict):
    """The model's features for one match; each field bounded. Field order is the model's column order."""

    # Strict: numbers only (JSON true/false or "1.5" are refused, not read as 1.0 or 1.5).
    model_config = ConfigDict(extra="forbid", strict=True)

    elo_home: float = Field(ge=800, le=2400, description="Home team's Elo rating before the match")
    elo_away: float = Field(ge=800, le=2400, description="Away team's Elo rating before the match")
    elo_fast_home: float = Field(ge=800, le=2400, description="Home team's fast-moving Elo rating (larger K)")
    elo_fast_away: float = Field(ge=800, le=2400, description="Away team's fast-moving Elo rating (larger K)")
    pi_home_h: float = Field(ge=-5, le=5, description="Home team's pi-rating at home (goal-difference units)")
    pi_home_a: float = Field(ge=-5, le=5, description="Home team's pi-rating away (goal-difference units)")
    pi_away_h: float = Field(ge=-5, le=5, description="Away team's pi-rating at home (goal-difference units)")
    pi_away_a: float = Field(ge=-5, le=5, description="Away team's pi-rating away (goal-difference units)")
    xg_home: float = Field(ge=0, le=10, description="Home goals expected by time-decayed Poisson ratings")
    xg_away: float = Field(ge=0, le=10, description="Away goals expected by time-decayed Poisson ratings")
    xg_logp_home: float = Field(ge=-25, le=0, description="Log probability of a home win from xg_home, xg_away")
    xg_logp_draw: float = Field(ge=-25, le=0, description="Log probability of a draw from xg_home, xg_away")
    xg_logp_away: float = Field(ge=-25, le=0, description="Log probability of an away win from xg_home, xg_away")
    xsot_home: float = Field(ge=0, le=30, description="Home shots on target expected by Poisson ratings")
    xsot_away: float = Field(ge=0, le=30, description="Away shots on target expected by Poisson ratings")
    xsot_logp_home: float = Field(ge=-25, le=0, description="Log probability of a home win from shots on target")
    xsot_logp_draw: float = Field(ge=-25, le=0, description="Log probability of a draw from shots on target")
    xsot_logp_away: float = Field(ge=-25, le=0, description="Log probability of an away win from shots on target")
    xmix_home: float = Field(ge=0, le=10, description="Home goals expected from ratings on goals and shots on target")
    xmix_away: float = Field(ge=0, le=10, description="Away goals expected from ratings on goals and shots on target")
    xmix_logp_home: float = Field(ge=-25, le=0, description="Log probability of a home win from xmix_home, xmix_away")
    xmix_logp_draw: float = Field(ge=-25, le=0, description="Log probability of a draw from xmix_home, xmix_away")
    xmix_logp_away: float = Field(ge=-25, le=0, description="Log probability of an away win from xmix_home, xmix_away")
    form_points_home: float = Field(ge=0, le=3, description="Home team's weighted recent points per match")
    form_points_away: float = Field(ge=0, le=3, description="Away team's weighted recent points per match")
    goals_for_home: float = Field(ge=0, le=10, description="Home team's weighted recent goals scored")
    goals_against_home: float = Field(ge=0, le=10, description="Home team's weighted recent goals conceded")
    goals_for_away: float = Field(ge=0, le=10, description="Away team's weighted recent goals scored")
    goals_against_away: float = Field(ge=0, le=10, description="Away team's weighted recent goals conceded")
    shots_for_home: float = Field(ge=0, le=60, description="Home team's weighted shots")
    shots_against_home: float = Field(ge=0, le=60, description="Home team's weighted shots conceded")
    shots_for_away: float = Field(ge=0, le=60, description="Away team's weighted shots")
    shots_against_away: float = Field(ge=0, le=60, description="Away team's weighted shots conceded")
    sot_for_home: float = Field(ge=0, le=30, description="Home team's weighted shots on target")
    sot_against_home: float = Field(ge=0, le=30, description="Home team's weighted shots on target conceded")
    sot_for_away: float = Field(ge=0, le=30, description="Away team's weighted shots on target")
    sot_against_away: float = Field(ge=0, le=30, description="Away team's weighted shots on target conceded")
    corners_for_home: float = Field(ge=0, le=25, description="Home team's weighted corners won")
    corners_against_home: float = Field(ge=0, le=25, description="Home team's weighted corners conceded")
    corners_for_away: float = Field(ge=0, le=25, description="Away team's weighted corners won")
    corners_against_away: float = Field(ge=0, le=25, description="Away team's weighted corners conceded")
    ht_goals_for_home: float = Field(ge=0, le=10, description="Home team's weighted first-half goals scored")
    ht_goals_against_home: float = Field(ge=0, le=10, description="Home team's weighted first-half goals conceded")
    ht_goals_for_away: float = Field(ge=0, le=10, description="Away team's weighted first-half goals scored")
    ht_goals_against_away: float = Field(ge=0, le=10, description="Away team's weighted first-half goals conceded")
    venue_points_home: float = Field(ge=0, le=3, description="Home team's weighted points per home match")
    venue_points_away: float = Field(ge=0, le=3, description="Away team's weighted points per away match")
    venue_goals_for_home: float = Field(ge=0, le=10, description="Home team's weighted goals scored at home")
    venue_goals_against_home: float = Field(ge=0, le=10, description="Home team's weighted goals conceded at home")
    venue_goals_for_away: float = Field(ge=0, le=10, description="Away team's weighted goals scored away")
    venue_goals_against_away: float = Field(ge=0, le=10, description="Away team's weighted goals conceded away")
    venue_sot_for_home: float = Field(ge=0, le=30, description="Home team's weighted shots on target at home")
    venue_sot_against_home: float = Field(ge=0, le=30, description="Home team's shots on target conceded at home")
    venue_sot_for_away: float = Field(ge=0, le=30, description="Away team's weighted shots on target away")
    venue_sot_against_away: float = Field(ge=0, le=30, description="Away team's shots on target conceded away")
    rest_days_home: float = Field(ge=0, le=30, description="Days since the home team's last match (capped)")
    rest_days_away: float = Field(ge=0, le=30, description="Days since the away team's last match (capped)")
    promoted_home: float = Field(ge=0, le=1, description="1 if the home team was promoted into the league this season")
    promoted_away: float = Field(ge=0, le=1, description="1 if the away team was promoted into the league this season")
    league_home_adv: float = Field(ge=-2, le=2, description="League's recent mean goal difference at home")
    league_draw_rate: float = Field(ge=0, le=1, description="League's recent share of draws")
    league_goals: float = Field(ge=0, le=10, description="League's recent mean goals per match")
    no_crowd: float = Field(ge=0, le=1, description="1 if the match is played behind closed doors (2020-21)")


FEATURE_NAMES: tuple[str, ...] = tuple(InlineFeatures.model_fields)


# The features of match 58754 (West Ham v Wolves, 2026-04-10) as `make up` stores them. The examples below are
# the ready bodies /docs offers; tests/integration/test_fuzz.py posts each of them to a live API.
EXAMPLE_MATCH_IDS = (58754, 58767, 58768)
EXAMPLE_FEATURES: JsonDict = {
    "elo_home": 1436,
    "elo_away": 1392,
    "elo_fast_home": 1454,
    "elo_fast_away": 1420,
    "pi_home_h": 0.03,
    "pi_home_a": -0.18,
    "pi_away_h": -0.13,
    "pi_away_a": -0.27,
    "xg_home": 1.58,
    "xg_away": 1.19,
    "xg_logp_home": -0.79,
    "xg_logp_draw": -1.34,
    "xg_logp_away": -1.27,
    "xsot_home": 4.24,
    "xsot_away": 4.09,
    "xsot_logp_home": -0.98,
    "xsot_logp_draw": -1.31,
    "xsot_logp_away": -1.04,
    "xmix_home": 1.46,
    "xmix_away": 1.21,
    "xmix_logp_home": -0.86,
    "xmix_logp_draw": -1.3,
    "xmix_logp_away": -1.18,
    "form_points_home": 1.06,
    "form_points_away": 1.38,
    "goals_for_home": 0.97,
    "goals_against_home": 1.54,
    "goals_for_away": 1.36,
    "goals_against_away": 1.28,
    "shots_for_home": 8.94,
    "shots_against_home": 17.51,
    "shots_for_away": 9.35,
    "shots_against_away": 14.59,
    "sot_for_home": 2.54,
    "sot_against_home": 5.73,
    "sot_for_away": 3.58,
    "sot_against_away": 4.73,
    "corners_for_home": 4.6,
    "corners_against_home": 7.87,
    "corners_for_away": 2.94,
    "corners_against_away": 5.46,
    "ht_goals_for_home": 0.52,
    "ht_goals_against_home": 0.79,
    "ht_goals_for_away": 0.28,
    "ht_goals_against_away": 0.83,
    "venue_points_home": 1.08,
    "venue_points_away": 0.58,
    "venue_goals_for_home": 1.05,
    "venue_goals_against_home": 1.02,
    "venue_goals_for_away": 0.79,
    "venue_goals_against_away": 1.37,
    "venue_sot_for_home": 2.65,
    "venue_sot_against_home": 4.71,
    "venue_sot_for_away": 4.04,
    "venue_sot_against_away": 4.37,
    "rest_days_home": 19,
    "rest_days_away": 25,
    "promoted_home": 0,
    "promoted_away": 0,
    "league_home_adv": 0.14,
    "league_draw_rate": 0.3,
    "league_goals": 2.67,
    "no_crowd": 0,
}

GRID_DESCRIPTION = "Also return the whole scoreline grid (home goals x away goals, 0..10 each)"


class InlinePredictionRequest(_Strict):
    """``POST /predict/``: features given inline, with optional labels for the answer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"home_team": "Home FC", "away_team": "Away FC", "date": "2026-06-01", "features": EXAMPLE_FEATURES}
            ]
        },
    )

    features: InlineFeatures
    home_team: TeamName | None = None
    away_team: TeamName | None = None
    date: IsoDate | None = None
    grid: bool = Field(default=False, strict=True, description=GRID_DESCRIPTION)


# An absolute http(s) URL: scheme, a host without credentials, then an optional path, query or fragment. Whether
# matchcast may call it (callbacks switched on, the SSRF policy) depends on its meaning: 422 answers the route
# declares.
CALLBACK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+([/?#]\S*)?$"


TTL_S_MAX = 7 * 24 * 3600  # a deadline at most a week ahead (and never past the task records' TTL: see the route)


class _Deadline(_Strict):
    """An async request's deadline: work not started by then is not computed and ends ``EXPIRED``."""

    deadline: AwareDatetime | None = Field(
        default=None,
        description="ISO time with a UTC offset (e.g. `2026-04-10T18:00:00Z`): work not started by then is not "
        "computed and ends `EXPIRED`. At most one of `deadline` and `ttl_s`",
    )
    ttl_s: float | None = Field(
        default=None, gt=0, le=TTL_S_MAX, description="Seconds from now: the same as a `deadline` that far ahead"
    )

    def deadline_ts(self, now: float) -> float | None:
        """The deadline as a Unix time (None: none); ``ValueError`` if both ``deadline`` and ``ttl_s`` are given."""
        if self.deadline is not None and self.ttl_s is not None:
            raise ValueError("give `deadline` or `ttl_s`, not both")
        if self.ttl_s is not None:
            return now + self.ttl_s
        return self.deadline.timestamp() if self.deadline is not None else None


class AsyncPredictionRequest(_Deadline):
    """``POST /predict/async/``; ``callback_url`` gets the final status, signed (see README)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"match_id": EXAMPLE_MATCH_IDS[0]}]})

    match_id: MatchId
    callback_url: str | None = Field(
        default=None,
        min_length=8,
        max_length=2048,
        pattern=CALLBACK_URL_PATTERN,
        description="Absolute http(s) URL that gets the final status, signed. Refused with 422 when callbacks are off "
        "(`invalid_input`: no MATCHCAST_CALLBACK_SECRET) or the SSRF policy refuses it (`callback_url_refused`)",
    )
    grid: bool = Field(default=False, strict=True, description=GRID_DESCRIPTION)


class BatchPredictionRequest(_Deadline):
    """``POST /predict/async/batch``: up to 1,000 stored matches at once (duplicates are predicted once)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"match_ids": list(EXAMPLE_MATCH_IDS)}]})

    match_ids: list[MatchId] = Field(min_length=1, max_length=1000)


class BatchTask(BaseModel):
    """One match of a batch and where to find its prediction."""

    match_id: int
    task_id: str
    status_url: str


class BatchSubmitted(BaseModel):
    """Answer of ``POST /predict/async/batch``: the batch (one status URL for all) and each task's own."""

    status: Literal["submitted"] = "submitted"
    count: int
    batch_id: str
    status_url: str = Field(description="`GET /monitoring/batch_status/{batch_id}`: the whole batch at once")
    tasks: list[BatchTask]


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


Probability = Annotated[float, Field(ge=0, le=1)]

# The markets are TypedDicts, not models: a prediction carries about thirty of these small objects, and
# validating dicts costs a third of building model instances (the API validates every prediction it serves).


class ExpectedGoals(TypedDict):
    """Mean goals of each side under the match's scoreline grid."""

    home: Annotated[float, Field(ge=0, le=10, examples=[1.52])]
    away: Annotated[float, Field(ge=0, le=10, examples=[1.08])]


class OverUnder(TypedDict):
    """Total goals over or under a half-goal line."""

    line: Annotated[float, Field(examples=[2.5])]
    over: Annotated[Probability, Field(examples=[0.49])]
    under: Annotated[Probability, Field(examples=[0.51])]


class BothTeamsToScore(TypedDict):
    """Both teams score (yes) or at least one does not (no)."""

    yes: Annotated[Probability, Field(examples=[0.52])]
    no: Annotated[Probability, Field(examples=[0.48])]


class DoubleChance(TypedDict):
    """Two of the three outcomes: home or draw, home or away, draw or away."""

    home_draw: Annotated[Probability, Field(examples=[0.73])]
    home_away: Annotated[Probability, Field(examples=[0.74])]
    draw_away: Annotated[Probability, Field(examples=[0.53])]


class DrawNoBet(TypedDict):
    """Home or away win given that the match is not drawn (a draw returns the stake)."""

    home: Annotated[Probability, Field(examples=[0.64])]
    away: Annotated[Probability, Field(examples=[0.36])]


class AsianHandicap(TypedDict):
    """The home side with ``line`` goals added: wins, pushes (whole lines only) or loses."""

    line: Annotated[float, Field(examples=[-0.5])]
    win: Annotated[Probability, Field(examples=[0.47])]
    push: Annotated[Probability, Field(examples=[0.0])]
    lose: Annotated[Probability, Field(examples=[0.53])]


class ScoreProbability(TypedDict):
    """One scoreline and its probability."""

    home_goals: Annotated[int, Field(ge=0, le=10, examples=[1])]
    away_goals: Annotated[int, Field(ge=0, le=10, examples=[1])]
    probability: Annotated[Probability, Field(examples=[0.12])]


class Markets(TypedDict):
    """Goal markets, each a sum of cells of the match's scoreline grid (so they agree with each other and 1X2)."""

    over_under: Annotated[list[OverUnder], Field(description="Total goals, lines 0.5 to 4.5")]
    btts: BothTeamsToScore
    double_chance: DoubleChance
    draw_no_bet: DrawNoBet
    asian_handicap: Annotated[list[AsianHandicap], Field(description="The home side's handicap, lines -2.5 to +2.5")]
    top_scores: Annotated[list[ScoreProbability], Field(description="The five likeliest scorelines, likeliest first")]


class MatchResult(BaseModel):
    """The final score of a played match."""

    home_goals: int
    away_goals: int
    result: Literal["H", "D", "A"]


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
    feature_revision: str | None = Field(
        default=None, description="Digest of the feature values used: changes whenever this match's features change"
    )
    features_as_of: dt.date | None = Field(
        default=None, description="Date of the latest result (of the match's league) that entered its features"
    )
    result: MatchResult | None = Field(
        default=None,
        description="The match's result once played; the prediction is still the pre-match forecast (features from "
        "before its date)",
    )
    predicted_at: dt.datetime
    expected_goals: ExpectedGoals | None = Field(default=None, description="None when markets are off")
    markets: Markets | None = Field(default=None, description="None when markets are off")
    grid: list[list[Probability]] | None = Field(
        default=None,
        description="P(home goals = row, away goals = column), 0..10 each; only when asked for (grid=true)",
    )


class AsyncSubmitted(BaseModel):
    """Answer of ``POST /predict/async/``."""

    task_id: str
    status: Literal["submitted"] = "submitted"
    status_url: str


class UnknownTeamOut(BaseModel):
    """A team name its league had never seen (README "Team names"): promoted (ingested) or held back."""

    league: str
    team: str
    season: str
    decision: Literal["promoted", "held_back"]
    nearest: list[str] = Field(description="The league's known names closest to it")
    matches: int


class IngestResult(BaseModel):
    """What the ingest of an uploaded file did (``ingest_upload``'s result, in its task status)."""

    kind: Literal["ingest"] = "ingest"
    name: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    features_changed: int
    rewritten: list[dict[str, Any]] = Field(default_factory=list, description="Past results whose score changed")
    unknown_teams: list[UnknownTeamOut] = Field(default_factory=list)


TaskState = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "DEAD_LETTERED", "EXPIRED"]
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "DEAD_LETTERED", "EXPIRED"})


class CallbackAttempt(BaseModel):
    """One delivery attempt of a completion callback."""

    at: dt.datetime
    status_code: int | None = None
    error: str | None = None


class CallbackStatus(BaseModel):
    """A task's completion callback: where it goes and how delivery went."""

    url: str
    delivered: bool = False
    attempts: list[CallbackAttempt] = Field(default_factory=list)


class TaskStatus(BaseModel):
    """Answer of ``GET /monitoring/task_status/{task_id}``; Celery's state names (plus ``DEAD_LETTERED``)."""

    task_id: str
    status: TaskState
    result: Prediction | None = None
    error: str | None = None
    ingest: IngestResult | None = Field(default=None, description="An `ingest_upload` task's report")
    callback: CallbackStatus | None = None
    deadline: dt.datetime | None = Field(default=None, description="`EXPIRED`: the deadline that passed")
    expired_at: dt.datetime | None = Field(default=None, description="`EXPIRED`: when a worker found it too late")


class BatchResult(BaseModel):
    """A predicted match of a batch."""

    match_id: int
    task_id: str
    result: Prediction


class BatchFailure(BaseModel):
    """A match of a batch that ended without a prediction, and why."""

    match_id: int
    task_id: str
    status: TaskState
    error: str | None = None


def _example(example: JsonDict) -> ConfigDict:
    """A model's configuration with one example for the OpenAPI document."""
    return ConfigDict(json_schema_extra={"examples": [example]})


class BatchStatus(BaseModel):
    """Answer of ``GET /monitoring/batch_status/{batch_id}``: counts by state, times, results and failures paged."""

    model_config = _example(
        {
            "batch_id": "0b7c5a2e-5f0e-4d4f-9a57-1d2f8f6c1a10",
            "status": "RUNNING",
            "count": 3,
            "counts": {"PENDING": 1, "SUCCESS": 1, "EXPIRED": 1},
            "done": 2,
            "done_fraction": 0.6667,
            "created_at": "2026-04-01T10:00:00Z",
            "started_at": "2026-04-01T10:00:01Z",
            "finished_at": None,
            "deadline": "2026-04-01T10:05:00Z",
            "cancelled_at": None,
            "offset": 0,
            "limit": 100,
            "results": [],
            "failures": [],
        }
    )

    batch_id: str
    status: Literal["PENDING", "RUNNING", "DONE", "CANCELLED"] = Field(
        description="`PENDING` until a task ends, `RUNNING` until all have, then `DONE` (`CANCELLED` if cancelled)"
    )
    count: int
    counts: dict[str, int] = Field(description="Tasks by state (states with none are left out)")
    done: int = Field(description="Tasks in a final state")
    done_fraction: float = Field(ge=0, le=1)
    created_at: dt.datetime
    started_at: dt.datetime | None = Field(default=None, description="When a worker began its first chunk")
    finished_at: dt.datetime | None = Field(default=None, description="When its last task ended")
    deadline: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    offset: int
    limit: int
    results: list[BatchResult] = Field(description="Predicted matches, in submission order, paged")
    failures: list[BatchFailure] = Field(description="Matches that ended without a prediction, paged the same way")


class BatchCancelled(BaseModel):
    """Answer of cancelling a batch: what was cancelled, and what had started or ended already."""

    batch_id: str
    cancelled: int
    not_cancelled: int = Field(description="Tasks already running or ended")


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


class GoneBody(ErrorBody):
    """A 410: the task (or batch) existed, and its record and result expired."""

    model_config = _example(
        {
            "type": "task_gone",
            "detail": "task 6f0c... has expired between 2026-04-02T10:00:00Z and 2026-04-02T11:00:00Z: ...",
            "expired_at": "2026-04-02T11:00:00Z",
            "expired_after": "2026-04-02T10:00:00Z",
        }
    )

    expired_at: dt.datetime = Field(description="When its record had expired at the latest")
    expired_after: dt.datetime | None = Field(
        default=None,
        description="When it expired at the earliest: ids are kept per hour of issue, so it expired in between",
    )


class DeadLetterOut(BaseModel):
    """A task given up on: its original arguments, why, and how often it was tried."""

    id: int
    task_id: str
    task_name: str
    args: Any
    reason: str
    error: str
    attempts: int
    created_at: dt.datetime
    replayed_at: dt.datetime | None = None
    replay_task_id: str | None = None


class DeadLetterPage(BaseModel):
    """A page of dead letters, newest first."""

    total: int
    limit: int
    offset: int
    items: list[DeadLetterOut]


class Readiness(BaseModel):
    """Answer of ``GET /ready``."""

    ready: bool
    checks: dict[str, str]
    missing: list[str]
    degraded: dict[str, str] = Field(
        default_factory=dict, description="Parts that work but less than promised (they do not make it unready)"
    )


# --- Live scores (GET /monitoring/live; README "Live scores") ---------------------------------------------------


class LiveScores(BaseModel):
    """Mean scores of forecasts over scored matches (lower is better but for accuracy)."""

    rps: float = Field(description="Ranked probability score")
    log_loss: float
    brier: float = Field(description="Multi-class Brier score (sum over the three outcomes)")
    accuracy: float = Field(description="Share of matches whose most likely outcome happened")


class LiveWindow(BaseModel):
    """One window's figures: the model's and the league-frequency baseline's, on the same matches."""

    n: int = Field(description="Matches scored")
    model: LiveScores | None = Field(description="None when no match is scored in the window")
    baseline: LiveScores | None = Field(description="The league-frequency baseline on the same matches")


class LiveWindowSpan(BaseModel):
    """What a window holds: matches dated from ``start`` to ``end``, of ``season``, or each version's ``last``."""

    start: dt.date | None = None
    end: dt.date | None = None
    season: str | None = None
    last: int | None = None


class LiveModel(BaseModel):
    """The live figures of one model version's served predictions, or (``shadow``) of its shadow predictions."""

    model_version: str
    shadow: bool = Field(description="True: the challenger's shadow predictions (computed, logged, never served)")
    role: str | None = Field(description="The alias the version carries now (`champion`, `challenger`), if any")
    heldout_rps: float | None = Field(description="The version's held-out RPS (its MLflow run), for drift")
    windows: dict[str, LiveWindow] = Field(description="By window: `7d`, `30d`, `season`, `last200`")


class LivePaired(BaseModel):
    """Champion and challenger on the same scored matches: mean RPS each, and the mean paired difference."""

    n: int
    champion_rps: float | None = None
    challenger_rps: float | None = None
    rps_diff: float | None = Field(default=None, description="Mean of challenger minus champion (negative: better)")
    rps_diff_se: float | None = Field(default=None, description="Its standard error (None below two matches)")


class LiveComparison(BaseModel):
    """A challenger's shadow predictions paired with a served version's predictions of the same matches."""

    champion_version: str
    challenger_version: str
    windows: dict[str, LivePaired]


class LiveLeague(BaseModel):
    """A league's served forecasts (every version, shadow rows apart) against the baseline, over the season."""

    league: str
    n: int = Field(description="Matches scored")
    model: LiveScores
    baseline: LiveScores = Field(description="The league-frequency baseline on the same matches")
    rps_diff: float = Field(description="Mean of model minus baseline RPS per match (negative: the model is better)")
    rps_diff_se: float | None = Field(default=None, description="Its standard error (None below two matches)")


class LiveReport(BaseModel):
    """Answer of ``GET /monitoring/live``."""

    computed_at: dt.datetime
    latest_match_date: dt.date | None = Field(
        default=None, description="The latest scored match date: windows end there"
    )
    season: str | None = None
    rule: str = Field(description="Which prediction of a match counts")
    windows: dict[str, LiveWindowSpan]
    models: list[LiveModel]
    comparisons: list[LiveComparison]
    leagues: list[LiveLeague] = Field(
        default_factory=list, description="Per league over the season window: the served forecasts and the baseline"
    )


class LivePrediction(MatchOut):
    """One counted prediction of a scored match (the match with its score), with its scores."""

    result_at: dt.datetime = Field(description="When the store got the result")
    model_version: str
    shadow: bool
    source: str = Field(description="sync, async or batch")
    served_at: dt.datetime
    feature_revision: str | None
    probabilities: Probabilities
    rps: float
    log_loss: float
    hit: bool = Field(description="The most likely outcome happened")
    baseline_rps: float = Field(description="The league-frequency baseline's RPS on this match")


class LivePredictionPage(BaseModel):
    """A page of counted predictions, newest match first."""

    total: int
    limit: int
    offset: int
    items: list[LivePrediction]
