"""The Streamlit pages against a fake API (httpx.MockTransport), driven by streamlit.testing's AppTest."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from matchcast.api.app import create_app
from matchcast.config import Settings
from matchcast.ui.client import ApiClient, ApiError, UiConfig

APP = Path(__file__).resolve().parents[2] / "src" / "matchcast" / "ui" / "app.py"
BASE = "http://api.test"


def _openapi() -> dict[str, Any]:
    spec: dict[str, Any] = create_app(Settings(home=Path("/nonexistent"))).openapi()
    return spec


OPENAPI = _openapi()


class FakeApi:
    """Just enough of the API, with knobs for failures; every request it sees is kept in ``calls``."""

    def __init__(self) -> None:
        # Friday 10 to Sunday 12 April (nine matches), then three on Tuesday 14 April, a week later.
        days = [10] * 4 + [11] * 3 + [12] * 2 + [14] * 3
        self.matches = [
            {
                "match_id": 100 + i,
                "league": ("premier-league", "serie-a")[i % 2],
                "season": "2025/26",
                "date": date(2026, 4, days[i]).isoformat(),
                "home_team": f"Home {i}",
                "away_team": f"Away {i}",
                "home_goals": None,
                "away_goals": None,
                "result": None,
            }
            for i in range(12)
        ]
        self.results: dict[int, tuple[int, int, str]] = {}
        self.sync_errors: dict[int, tuple[int, dict[str, Any]]] = {}
        self.submit_errors: dict[int, tuple[int, dict[str, Any]]] = {}
        self.task_failures: dict[int, str] = {}
        self.pending_polls = 2
        self.polls: Counter[str] = Counter()
        self.tasks: dict[str, int] = {}
        self.batches: dict[str, list[str]] = {}
        self.calls: list[httpx.Request] = []
        self.live: tuple[dict[str, Any], dict[str, Any]] | None = None  # /monitoring/live and its predictions
        self.live_error: tuple[int, dict[str, Any]] | None = None

    def prediction(self, match_id: int | None, **labels: Any) -> dict[str, Any]:
        p = 0.3 + (match_id or 0) % 7 / 50
        m = next((x for x in self.matches if x["match_id"] == match_id), {})
        return {
            "match_id": match_id,
            "league": m.get("league"),
            "home_team": labels.get("home_team", m.get("home_team")),
            "away_team": labels.get("away_team", m.get("away_team")),
            "date": m.get("date"),
            "probabilities": {"home": p + 0.2, "draw": 0.25, "away": round(1 - p - 0.45, 10)},
            "model_name": "matchcast",
            "model_version": "7",
            "feature_version": "v1-test",
            "predicted_at": "2026-04-01T10:00:00Z",
        }

    def task(self, tid: str) -> dict[str, Any]:
        """A task's status as the API gives it; each look at it counts as a poll, and it ends after a few."""
        mid = self.tasks[tid]
        self.polls[tid] += 1
        if self.polls[tid] <= self.pending_polls:
            return {"task_id": tid, "status": "PENDING", "result": None, "error": None}
        if mid in self.task_failures:
            return {"task_id": tid, "status": "FAILURE", "result": None, "error": self.task_failures[mid]}
        return {"task_id": tid, "status": "SUCCESS", "result": self.prediction(mid), "error": None}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        path, q = request.url.path, request.url.params
        if path == "/openapi.json":
            return httpx.Response(200, json=OPENAPI)
        if path == "/predict/matches/":
            items = [
                m
                for m in self.matches
                if (not q.get("league") or m["league"] == q["league"])
                and (not q.get("from") or m["date"] >= q["from"])
                and (not q.get("to") or m["date"] <= q["to"])
                and m["match_id"] not in self.results
            ]
            lim, off = int(q.get("limit", 50)), int(q.get("offset", 0))
            return httpx.Response(
                200, json={"total": len(items), "limit": lim, "offset": off, "items": items[off : off + lim]}
            )
        if path.startswith("/predict/matches/"):
            mid = int(path.rsplit("/", 1)[1])
            m = next((dict(x) for x in self.matches if x["match_id"] == mid), None)
            if m is None:
                return httpx.Response(404, json={"type": "match_not_found", "detail": f"no match with match_id={mid}"})
            if mid in self.results:
                m["home_goals"], m["away_goals"], m["result"] = self.results[mid]
            return httpx.Response(200, json=m)
        if path == "/predict/model/info":
            return httpx.Response(
                200,
                json={
                    "name": "matchcast",
                    "version": "7",
                    "alias": "champion",
                    "run_id": "abc123",
                    "created_at": "2026-04-01T09:00:00Z",
                    "training_window": {"start": "1994-07-28", "end": "2026-03-22", "held_out_season": "2024/25"},
                    "feature_names": [],
                    "feature_version": "v1-test",
                    "metrics": {"heldout_rps": 0.1999, "heldout_accuracy": 0.52},
                },
            )
        if path == "/predict/" and request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(200, json=self.prediction(None, **{k: body[k] for k in body if k != "features"}))
        if path == "/predict/async/":
            mid = json.loads(request.content)["match_id"]
            if mid in self.submit_errors:
                code, body = self.submit_errors[mid]
                return httpx.Response(code, json=body)
            tid = f"task-{mid}"
            self.tasks[tid] = mid
            return httpx.Response(
                202, json={"task_id": tid, "status": "submitted", "status_url": f"/monitoring/task_status/{tid}"}
            )
        if path == "/predict/async/batch":  # all or nothing, as the API: unknown ids are a 404 naming them
            mids = json.loads(request.content)["match_ids"]
            unknown = [m for m in mids if m in self.submit_errors]
            if unknown:
                detail = f"unknown match ids (nothing was queued): {unknown}"
                return httpx.Response(404, json={"type": "matches_not_found", "detail": detail, "match_ids": unknown})
            bid = f"batch-{len(self.batches)}"
            self.batches[bid] = [f"task-{m}" for m in mids]
            self.tasks.update({f"task-{m}": m for m in mids})
            tasks = [
                {"match_id": m, "task_id": f"task-{m}", "status_url": f"/monitoring/task_status/task-{m}"} for m in mids
            ]
            url = f"/monitoring/batch_status/{bid}"
            body = {"status": "submitted", "count": len(mids), "batch_id": bid, "status_url": url, "tasks": tasks}
            return httpx.Response(202, json=body)
        if path.startswith("/monitoring/batch_status/"):  # each read of a batch observes each of its tasks once
            states = [self.task(tid) for tid in self.batches[path.rsplit("/", 1)[1]]]
            results = [{"match_id": self.tasks[s["task_id"]], **s} for s in states if s["status"] == "SUCCESS"]
            failures = [{"match_id": self.tasks[s["task_id"]], **s} for s in states if s["status"] == "FAILURE"]
            return httpx.Response(200, json={"results": results, "failures": failures})
        if path.startswith("/monitoring/live"):
            if self.live_error is not None:
                return httpx.Response(self.live_error[0], json=self.live_error[1])
            assert self.live is not None
            return httpx.Response(200, json=self.live[0] if path == "/monitoring/live" else self.live[1])
        if path.startswith("/monitoring/task_status/"):
            return httpx.Response(200, json=self.task(path.rsplit("/", 1)[1]))
        if path.startswith("/predict/"):
            mid = int(path.rsplit("/", 1)[1])
            if mid in self.sync_errors:
                code, body = self.sync_errors[mid]
                return httpx.Response(code, json=body)
            return httpx.Response(200, json=self.prediction(mid))
        return httpx.Response(404, json={"type": "not_found", "detail": "Not Found"})


def run_page(name: str, client: object, home: object) -> None:
    """The AppTest script: one page of the UI with a given client (AppTest passes the arguments in).

    Its source runs alone, so its annotations name only builtins.
    """
    from matchcast.ui import pages

    pages.PAGES[name](pages.Ui(client=client, home=home, poll_s=0.01))


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def page(name: str, api: FakeApi, home: Path, api_key: str | None = None) -> AppTest:
    client = ApiClient(BASE, api_key=api_key, transport=httpx.MockTransport(api))
    return AppTest.from_function(run_page, args=(name, client, home), default_timeout=20)


def texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.markdown, *at.caption, *at.title, *at.subheader, *at.info, *at.warning)]
    return "\n".join(str(p) for p in parts)


# --- Upcoming ----------------------------------------------------------------------------------------------------


def test_upcoming_filters_predicts_and_records(api: FakeApi, tmp_path: Path) -> None:
    at = page("upcoming", api, tmp_path).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="up_league").options == ["All leagues", "premier-league", "serie-a"]
    # Default window: the first upcoming date and six days on; every match of the fake store falls in it.
    assert len(at.selectbox(key="up_match").options) == 12
    at.selectbox(key="up_league").select("serie-a").run()
    listing = [r for r in api.calls if r.url.path == "/predict/matches/"][-1]
    assert listing.url.params["league"] == "serie-a" and listing.url.params["from"] == "2026-04-10"
    assert len(at.selectbox(key="up_match").options) == 6
    at.date_input(key="up_to").set_value(date(2026, 4, 10)).run()
    assert len(at.selectbox(key="up_match").options) == 2
    choice = at.selectbox(key="up_match").options[1]
    at.selectbox(key="up_match").select_index(1).run()
    at.button(key="up_predict").click().run()
    assert not at.exception and not at.error
    assert [m.label for m in at.metric] == ["Home win", "Draw", "Away win"]
    assert "version 7" in texts(at) and "Home 3 v Away 3" in choice
    assert [r.url.path for r in api.calls if r.url.path.startswith("/predict/1")] == ["/predict/103"]
    assert not (tmp_path / "ui").exists()  # the UI keeps no record of its own: the workers' prediction log does


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (504, {"type": "prediction_timeout", "detail": "no result within 30 s"}, "time limit (504"),
        (503, {"type": "service_unavailable", "detail": "x", "missing": ["broker"]}, "broker unreachable"),
    ],
)
def test_upcoming_shows_timeouts_and_outages_as_a_message(
    api: FakeApi, tmp_path: Path, status: int, body: dict[str, Any], expected: str
) -> None:
    api.sync_errors[100] = (status, body)
    at = page("upcoming", api, tmp_path).run()
    at.button(key="up_predict").click().run()
    assert not at.exception
    assert len(at.error) == 1 and expected in at.error[0].value
    assert not at.metric


def test_every_page_says_so_when_the_api_is_down(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    for name in ("upcoming", "batch", "what-if", "model"):
        client = ApiClient(BASE, transport=httpx.MockTransport(refuse))
        at = AppTest.from_function(run_page, args=(name, client, tmp_path)).run()
        assert not at.exception, name
        assert len(at.error) == 1 and "not reachable" in at.error[0].value, name


def test_the_api_key_is_sent_when_set(api: FakeApi, tmp_path: Path) -> None:
    page("model", api, tmp_path, api_key="s3cret").run()
    assert api.calls and all(r.headers.get("x-api-key") == "s3cret" for r in api.calls)
    api.calls.clear()
    page("model", api, tmp_path).run()
    assert api.calls and all("x-api-key" not in r.headers for r in api.calls)


# --- Batch -------------------------------------------------------------------------------------------------------


def test_batch_of_a_matchday_fills_progress_and_lists_failures(api: FakeApi, tmp_path: Path) -> None:
    api.submit_errors[101] = (404, {"type": "match_not_found", "detail": "no match with match_id=101"})
    api.task_failures[102] = "FeaturesNotReady: no features for match 102"
    at = page("batch", api, tmp_path).run()
    assert not at.exception and not at.error
    assert at.radio(key="b_mode").value == "A whole matchday"
    week = at.selectbox(key="b_week")
    assert week.value == "2026-04-06" and week.options == [
        "week of 2026-04-06 (9 matches)",
        "week of 2026-04-13 (3 matches)",
    ]
    assert at.button(key="b_submit").label == "Submit 9 predictions"
    at.button(key="b_submit").click().run()
    assert not at.exception
    bar = at.get("progress")[-1]
    assert bar.proto.value == 100 and "9 of 9 done (7 predicted)" in bar.proto.text
    table = at.dataframe[-1].value
    assert list(table["status"]).count("SUCCESS") == 7 and len(table) == 9
    assert {"NOT SUBMITTED", "FAILURE"} <= set(table["status"])
    [failures] = at.error
    assert "2 failed" in failures.value
    assert "Home 1 v Away 1: NOT SUBMITTED: Not found: no match with match_id=101" in failures.value
    assert "FeaturesNotReady: no features for match 102" in failures.value
    # Every task was polled until it reported, and each success was recorded once.
    assert all(n == api.pending_polls + 1 for n in api.polls.values()) and len(api.polls) == 8
    # A rerun shows the finished batch without polling again.
    polls = sum(api.polls.values())
    at.run()
    assert sum(api.polls.values()) == polls and at.dataframe[-1].value.equals(table)


def test_a_batch_is_one_submission_and_one_status_request_a_round(api: FakeApi, tmp_path: Path) -> None:
    at = page("batch", api, tmp_path).run()
    at.button(key="b_submit").click().run()
    assert not at.exception and not at.error
    paths = [r.url.path for r in api.calls if r.url.path.startswith(("/predict/async", "/monitoring"))]
    assert paths[0] == "/predict/async/batch" and paths.count("/predict/async/batch") == 1
    rounds = [p for p in paths if p.startswith("/monitoring/")]
    assert set(rounds) == {"/monitoring/batch_status/batch-0"} and len(rounds) == api.pending_polls + 1
    assert list(at.dataframe[-1].value["status"]) == ["SUCCESS"] * 9


def test_batch_of_a_selection(api: FakeApi, tmp_path: Path) -> None:
    at = page("batch", api, tmp_path).run()
    at.radio(key="b_mode").set_value("A selection").run()
    assert at.button(key="b_submit").disabled
    at.multiselect(key="b_selection").select(105).select(110).run()
    assert at.button(key="b_submit").label == "Submit 2 predictions"
    at.button(key="b_submit").click().run()
    assert not at.exception and not at.error
    assert sorted(api.tasks.values()) == [105, 110]
    assert list(at.dataframe[-1].value["status"]) == ["SUCCESS", "SUCCESS"]


def test_batch_gives_up_at_its_deadline(api: FakeApi, tmp_path: Path) -> None:
    api.pending_polls = 10**6

    def run_slow(client: object, home: object) -> None:
        from matchcast.ui import pages

        pages.batch(pages.Ui(client=client, home=home, poll_s=0.01, batch_deadline_s=0.2))

    client = ApiClient(BASE, transport=httpx.MockTransport(api))
    at = AppTest.from_function(run_slow, args=(client, tmp_path), default_timeout=20).run()
    at.radio(key="b_mode").set_value("A selection").run()
    at.multiselect(key="b_selection").select(100).run()
    at.button(key="b_submit").click().run()
    assert not at.exception
    assert "no result after 0 s (last PENDING)" in at.error[0].value
    assert list(at.dataframe[-1].value["status"]) == ["GAVE UP"]


# --- What-if -----------------------------------------------------------------------------------------------------


def test_what_if_form_takes_its_bounds_from_the_openapi_schema(api: FakeApi, tmp_path: Path) -> None:
    at = page("what-if", api, tmp_path).run()
    assert not at.exception and not at.error
    inputs = {n.key: n for n in at.number_input}
    props = OPENAPI["components"]["schemas"]["InlineFeatures"]["properties"]
    assert set(inputs) == {f"wi_{name}" for name in props}
    for name, p in props.items():
        assert inputs[f"wi_{name}"].min == p["minimum"] and inputs[f"wi_{name}"].max == p["maximum"]
    inputs["wi_elo_home"].set_value(1800.0)
    at.text_input[0].input("Lions")
    at.button[0].click().run()
    assert not at.exception and not at.error
    [post] = [r for r in api.calls if r.method == "POST"]
    body = json.loads(post.content)
    assert body["features"]["elo_home"] == 1800.0 and body["home_team"] == "Lions"
    assert set(body["features"]) == set(props)
    assert [m.label for m in at.metric] == ["Home win", "Draw", "Away win"]


def test_what_if_shows_the_apis_validation_errors(api: FakeApi, tmp_path: Path) -> None:
    original = api.__call__

    def refuse_post(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            detail = [{"loc": ["body", "features", "elo_home"], "msg": "Input should be <= 2400", "type": "x"}]
            return httpx.Response(422, json={"type": "validation_error", "detail": detail})
        return original(request)

    client = ApiClient(BASE, transport=httpx.MockTransport(refuse_post))
    at = AppTest.from_function(run_page, args=("what-if", client, tmp_path)).run()
    at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value == "The API refused the input: features.elo_home: Input should be <= 2400"


# --- Model -------------------------------------------------------------------------------------------------------


def test_model_page_shows_registry_metadata_and_how_to_evaluate(api: FakeApi, tmp_path: Path) -> None:
    at = page("model", api, tmp_path).run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric} == {
        "Name": "matchcast",
        "Version": "7",
        "Alias": "champion",
        "Features": "v1-test",
    }
    assert "1994-07-28 to 2026-03-22" in texts(at) and "2024/25" in texts(at)
    assert list(at.dataframe[0].value["metric"]) == ["heldout_rps", "heldout_accuracy"]
    assert "matchcast evaluate" in at.info[0].value


def test_model_page_shows_an_evaluation_summary_when_present(api: FakeApi, tmp_path: Path) -> None:
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "summary.csv").write_text("model,rps\nmatchcast,0.1990\nuniform,0.2220\n")
    at = page("model", api, tmp_path).run()
    assert not at.exception and not at.info
    assert list(at.dataframe[-1].value["model"]) == ["matchcast", "uniform"]


# --- Results so far ----------------------------------------------------------------------------------------------


def live_body(scored: list[tuple[int, str, float]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``GET /monitoring/live`` and ``/monitoring/live/predictions`` bodies for ``scored`` (match, result, p_home),
    made with the API's own schemas and scoring so the fake answers what the API would."""
    from datetime import UTC, datetime

    import numpy as np

    from matchcast.data.prediction_log import CountedPrediction
    from matchcast.data.store import MatchRow
    from matchcast.schemas import LiveModel, LiveReport, LiveScores, LiveWindow
    from matchcast.service.live import Windows, league_scores, prediction_rows

    now = datetime(2026, 4, 20, tzinfo=UTC)
    counted = [
        CountedPrediction(
            MatchRow(mid, "premier-league", "2025/26", date(2026, 4, 10), f"Home {mid}", f"Away {mid}", 1, 0, res),
            now, "7", False, "sync", (p, 0.25, 0.75 - p), now, None,
        )
        for mid, res, p in scored
    ]  # fmt: skip
    baseline = {c.match.match_id: np.array([0.45, 0.27, 0.28]) for c in counted}
    page = {"total": len(counted), "limit": 200, "offset": 0, "items": [
        r.model_dump(mode="json") for r in prediction_rows(counted, baseline)
    ]}  # fmt: skip
    scores = LiveScores(rps=0.21, log_loss=1.0, brier=0.6, accuracy=0.5)
    base = LiveScores(rps=0.23, log_loss=1.05, brier=0.64, accuracy=0.45)
    window = (
        LiveWindow(n=len(counted), model=scores, baseline=base)
        if counted
        else LiveWindow(n=0, model=None, baseline=None)
    )
    models = [
        LiveModel(model_version="7", shadow=False, role="champion", heldout_rps=0.2, windows=dict.fromkeys(
            ("7d", "30d", "season", "last200"), window
        ))
    ] if counted else []  # fmt: skip
    spans = Windows(date(2026, 4, 10), "2025/26").spans() if counted else {}
    report = LiveReport(
        computed_at=now, latest_match_date=date(2026, 4, 10) if counted else None, season="2025/26",
        rule="the last prediction served before the result", windows=spans, models=models, comparisons=[],
        leagues=league_scores(counted, baseline),
    )  # fmt: skip
    return report.model_dump(mode="json"), page


def test_results_so_far_reads_the_live_scores_from_the_api(api: FakeApi, tmp_path: Path) -> None:
    api.live = live_body([])
    at = page("results", api, tmp_path).run()
    assert not at.exception and not at.error
    assert "No prediction has been scored yet" in at.info[0].value
    api.live = live_body([(100, "H", 0.5), (101, "D", 0.3)])
    at = page("results", api, tmp_path).run()
    assert not at.exception and not at.error
    assert {"/monitoring/live", "/monitoring/live/predictions"} <= {r.url.path for r in api.calls}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Scored this season"] == "2" and metrics["Mean RPS"] == "0.2100"
    assert metrics["Frequency baseline RPS"] == "0.2300"
    summary, leagues, table = (d.value for d in at.dataframe)
    assert set(summary["window"]) == {"last 7 days", "last 30 days", "the season", "last 200"}
    # Per league: the served forecasts against the baseline on the same matches (0.45 H, 0.27 D, 0.28 A).
    assert list(leagues["league"]) == ["premier-league"] and list(leagues["matches"]) == [2]
    model_rps = [((0.5 - 1) ** 2 + (0.75 - 1) ** 2) / 2, (0.3**2 + (0.3 + 0.25 - 1) ** 2) / 2]
    base_rps = [((0.45 - 1) ** 2 + (0.72 - 1) ** 2) / 2, (0.45**2 + (0.72 - 1) ** 2) / 2]
    assert leagues["RPS"][0] == pytest.approx(sum(model_rps) / 2)
    assert leagues["difference"][0] == pytest.approx((sum(model_rps) - sum(base_rps)) / 2)
    assert list(table["match_id"]) == [101, 100] and list(table["result"]) == ["D", "H"]
    assert list(table["hit"]) == [False, True]  # 0.5 home is the likeliest for 100; 0.45 away for 101
    assert not (tmp_path / "ui").exists()


def test_results_so_far_says_what_failed(api: FakeApi, tmp_path: Path) -> None:
    api.live_error = (403, {"type": "forbidden", "detail": "this needs a predict key"})
    at = page("results", api, tmp_path).run()
    assert not at.exception
    assert len(at.error) == 1 and "may not do this" in at.error[0].value


# --- The entry point ---------------------------------------------------------------------------------------------


def test_app_navigation_and_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHCAST_UI_API_URL", "http://127.0.0.1:9/")  # nothing listens on the discard port
    monkeypatch.setenv("MATCHCAST_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=20).run()
    assert not at.exception
    assert "not reachable" in at.error[0].value and "http://127.0.0.1:9" in at.error[0].value
    assert "API http://127.0.0.1:9" in at.sidebar.caption[0].value
    assert UiConfig.from_env({"MATCHCAST_HOME": str(tmp_path)}) == UiConfig(home=tmp_path)


def test_the_client_waits_out_a_rate_limit_and_explains_a_missing_key() -> None:
    api, calls = FakeApi(), []

    def limited_once(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"type": "rate_limited", "detail": "wait"})
        return api(request)

    assert ApiClient(BASE, transport=httpx.MockTransport(limited_once)).model_info()["version"] == "7"
    assert len(calls) == 2

    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"type": "unauthorized", "detail": "an API key is required"})

    with pytest.raises(ApiError) as err:
        ApiClient(BASE, transport=httpx.MockTransport(unauthorized)).model_info()
    assert err.value.status == 401 and "MATCHCAST_UI_API_KEY" in err.value.message
