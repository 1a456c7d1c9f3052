"""The UI's pages. Each takes a ``Ui`` (HTTP client, home folder) so tests can give it a fake API.

An API failure is shown as one sentence (``st.error``), never as a stack trace.

About 490 lines on purpose: one function a page, each read top to bottom as the page appears, with the few
small helpers they share; a module a page would leave those helpers imported back and forth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from matchcast.ui.client import ApiClient, ApiError, FeatureField
from matchcast.ui.markets import show_goal_evaluation, show_markets

ALL_LEAGUES = "All leagues"
WAITING = {"PENDING", "STARTED", "RETRY"}
OUTCOME_LABELS = {"home": "Home win", "draw": "Draw", "away": "Away win"}
OUTCOME_KEYS = {"H": "home", "D": "draw", "A": "away"}
# Starting values for the what-if form (a plausible strong home side); unknown features start at their midpoint.
TYPICAL = {
    "elo_home": 1620.0,
    "elo_away": 1480.0,
    "form_points_home": 1.9,
    "form_points_away": 1.1,
    "goals_for_home": 1.8,
    "goals_against_home": 0.9,
    "goals_for_away": 1.1,
    "goals_against_away": 1.6,
    "sot_for_home": 5.5,
    "sot_against_home": 3.5,
    "sot_for_away": 3.8,
    "sot_against_away": 5.0,
    "rest_days_home": 7.0,
    "rest_days_away": 4.0,
    "league_home_adv": 0.3,
    "league_draw_rate": 0.25,
}


@dataclass
class Ui:
    """What every page needs."""

    client: ApiClient
    home: Path
    poll_s: float = 1.0  # a batch is followed by one status request this often, however many matches it has
    batch_deadline_s: float = 180.0


def match_label(m: dict[str, Any]) -> str:
    """``2026-04-10 · premier-league · West Ham v Wolves``."""
    return f"{m['date']} · {m['league']} · {m['home_team']} v {m['away_team']}"


def show_prediction(pred: dict[str, Any]) -> None:
    """Probabilities as metrics and a home/draw/away bar chart, with the model version."""
    probs = pred["probabilities"]
    if pred.get("home_team") and pred.get("away_team"):
        st.subheader(f"{pred['home_team']} v {pred['away_team']}")
    cols = st.columns(3)
    for col, outcome in zip(cols, ("home", "draw", "away"), strict=True):
        col.metric(OUTCOME_LABELS[outcome], f"{probs[outcome]:.0%}")
    data = pd.DataFrame(
        {
            "outcome": [OUTCOME_LABELS[o] for o in ("home", "draw", "away")],
            "probability": [probs[o] for o in ("home", "draw", "away")],
        }
    )
    encoding = {
        "x": {"field": "outcome", "type": "nominal", "sort": None, "title": None, "axis": {"labelAngle": 0}},
        "y": {"field": "probability", "type": "quantitative", "scale": {"domain": [0, 1]}, "axis": {"format": "%"}},
    }
    st.vega_lite_chart(
        data,
        {
            "height": 260,
            "encoding": encoding,
            "layer": [
                {
                    "mark": {"type": "bar", "cornerRadiusEnd": 3},
                    "encoding": {
                        "color": {
                            "field": "outcome",
                            "type": "nominal",
                            "sort": None,
                            "legend": None,
                            "scale": {"range": ["#2e7d32", "#9e9e9e", "#1565c0"]},
                        }
                    },
                },
                {"mark": {"type": "text", "dy": -8}, "encoding": {"text": {"field": "probability", "format": ".1%"}}},
            ],
        },
        width="stretch",
    )
    show_markets(pred)
    st.caption(
        f"Model {pred['model_name']} version {pred['model_version']}"
        + (f" · features {pred['feature_version']}" if pred.get("feature_version") else "")
        + (f" (revision {pred['feature_revision']})" if pred.get("feature_revision") else "")
        + (f" · results up to {pred['features_as_of']}" if pred.get("features_as_of") else "")
        + f" · predicted at {pred['predicted_at']}"
        + (_played(pred["result"]) if pred.get("result") else "")
    )


def _played(result: dict[str, Any]) -> str:
    """The caption's note on a played match: its score; the forecast shown is still the pre-match one."""
    return f" · played: {result['home_goals']}-{result['away_goals']} (this is the pre-match forecast)"


def _upcoming_or_stop(ui: Ui) -> list[dict[str, Any]]:
    try:
        matches = ui.client.all_upcoming()
    except ApiError as exc:
        st.error(exc.message)
        st.stop()
    if not matches:
        st.info("No upcoming matches in the store. Load fixtures with `matchcast ingest FILE.csv` (empty scores).")
        st.stop()
    return matches


# --- Upcoming matches --------------------------------------------------------------------------------------------


def upcoming(ui: Ui) -> None:
    """Filter upcoming matches by league and date, pick one, predict it synchronously."""
    st.title("Upcoming matches")
    everything = _upcoming_or_stop(ui)
    leagues = sorted({m["league"] for m in everything})
    first, last = date.fromisoformat(everything[0]["date"]), date.fromisoformat(everything[-1]["date"])
    c1, c2, c3 = st.columns([2, 1, 1])
    league = c1.selectbox("League", [ALL_LEAGUES, *leagues], key="up_league")
    start = c2.date_input("From", value=first, min_value=first, max_value=last, key="up_from")
    end = c3.date_input("To", value=min(first + timedelta(days=6), last), min_value=first, max_value=last, key="up_to")
    if not isinstance(start, date) or not isinstance(end, date) or start > end:
        st.warning("Choose a start date on or before the end date.")
        return
    try:
        page = ui.client.upcoming(
            league=None if league == ALL_LEAGUES else league,
            date_from=start.isoformat(),
            date_to=end.isoformat(),
            limit=200,
        )
    except ApiError as exc:
        st.error(exc.message)
        return
    matches = page["items"]
    if not matches:
        st.info("No upcoming match for these filters.")
        return
    shown = f"{len(matches)} of {page['total']}" if page["total"] > len(matches) else str(page["total"])
    left, right = st.columns([3, 2], gap="large")
    left.caption(f"{shown} upcoming matches, soonest first")
    left.dataframe(
        pd.DataFrame(matches)[["match_id", "date", "league", "home_team", "away_team"]],
        hide_index=True,
        height=min(38 + 35 * len(matches), 600),
    )
    by_id = {m["match_id"]: m for m in matches}
    with right:
        match_id = st.selectbox("Match", list(by_id), format_func=lambda i: match_label(by_id[i]), key="up_match")
        if st.button("Predict", type="primary", key="up_predict"):
            with st.spinner("Predicting (synchronous, up to the API's time limit)…"):
                try:
                    pred = ui.client.predict_match(int(match_id))
                except ApiError as exc:
                    st.session_state["up_result"] = {"match_id": match_id, "error": exc.message}
                else:
                    st.session_state["up_result"] = {"match_id": match_id, "prediction": pred}
        result = st.session_state.get("up_result")
        if result and result["match_id"] == match_id:
            if "error" in result:
                st.error(result["error"])
            else:
                show_prediction(result["prediction"])


# --- Batch -------------------------------------------------------------------------------------------------------


def _week_of(day: str) -> str:
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


def _submit(ui: Ui, chosen: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch for all chosen matches; matches the API does not know are left out (and listed)."""
    items = {int(m["match_id"]): {"match": m, "status": "PENDING"} for m in chosen}
    job: dict[str, Any] = {"started": time.monotonic(), "items": list(items.values()), "finished": False}
    wanted = list(items)
    while wanted:
        try:
            sub = ui.client.submit_batch(wanted)
        except ApiError as exc:
            unknown = {int(i) for i in exc.body.get("match_ids") or []} & set(wanted) if exc.status == 404 else set()
            for match_id in unknown or wanted:
                error = f"Not found: no match with match_id={match_id}" if unknown else exc.message
                items[match_id].update(status="NOT SUBMITTED", error=error)
            wanted = [m for m in wanted if m not in unknown] if unknown else []
            continue
        job["status_url"] = sub["status_url"]
        for task in sub["tasks"]:
            items[int(task["match_id"])].update(task_id=task["task_id"], status_url=task["status_url"])
        break
    return job


def _batch_tables(job: dict[str, Any], table: Any, failures: Any) -> None:
    rows = []
    for it in job["items"]:
        m, res = it["match"], it.get("result") or {}
        probs = res.get("probabilities") or {}
        rows.append(
            {
                "match": match_label(m),
                "status": it["status"],
                "home": probs.get("home"),
                "draw": probs.get("draw"),
                "away": probs.get("away"),
                "model version": res.get("model_version"),
            }
        )
    table.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={k: st.column_config.NumberColumn(k, format="percent") for k in ("home", "draw", "away")},
    )
    failed = [it for it in job["items"] if it.get("error")]
    if failed:
        failures.error(
            f"{len(failed)} failed:\n"
            + "\n".join(f"- {match_label(it['match'])}: {it['status']}: {it['error']}" for it in failed)
        )
    else:
        failures.empty()


def _read_batch(ui: Ui, job: dict[str, Any]) -> None:
    """One batch status request: every task that ended since the last one takes its result or its failure."""
    try:
        batch = ui.client.batch_status(job["status_url"])
    except ApiError as exc:
        if exc.status in (404, 410):  # expired or never issued: it will not come back
            for it in job["items"]:
                if it["status"] in WAITING:
                    it.update(status="EXPIRED", error=exc.message)
        return  # anything else may pass; ask again
    by_task = {it["task_id"]: it for it in job["items"] if "task_id" in it}
    for done in batch.get("results", []):
        it = by_task.get(done["task_id"])
        if it is not None and it["status"] in WAITING:
            it.update(status="SUCCESS", result=done["result"])
    for failed in batch.get("failures", []):
        it = by_task.get(failed["task_id"])
        if it is not None and it["status"] in WAITING:
            it.update(status=failed["status"], error=failed.get("error") or f"task ended {failed['status']}")


def follow(ui: Ui, job: dict[str, Any]) -> None:
    """Follow a batch by one status request a second until every task is done (or the deadline passes)."""
    items = job["items"]
    total = len(items)
    bar = st.progress(0.0, text=f"0 of {total} done")
    table, failures = st.empty(), st.empty()
    while True:
        if "status_url" in job and any(it["status"] in WAITING for it in items):
            _read_batch(ui, job)
        done = sum(it["status"] not in WAITING for it in items)
        succeeded = sum(it["status"] == "SUCCESS" for it in items)
        bar.progress(done / total, text=f"{done} of {total} done ({succeeded} predicted)")
        _batch_tables(job, table, failures)
        if done == total:
            job["finished"] = True
            break
        if time.monotonic() - job["started"] > ui.batch_deadline_s:
            for it in items:
                if it["status"] in WAITING:
                    it.update(error=f"no result after {ui.batch_deadline_s:.0f} s (last {it['status']})")
                    it["status"] = "GAVE UP"
            job["finished"] = True
            bar.progress(1.0, text=f"{total} of {total} done ({succeeded} predicted)")
            _batch_tables(job, table, failures)
            break
        time.sleep(ui.poll_s)


def batch(ui: Ui) -> None:
    """Submit a selection or a whole matchday asynchronously; follow the tasks to completion."""
    st.title("Batch predictions")
    st.caption(
        "The matches are queued as one batch (POST /predict/async/batch); the progress bar fills as the batch's "
        "status (one request a second) reports results."
    )
    everything = _upcoming_or_stop(ui)
    leagues = sorted({m["league"] for m in everything})
    mode = st.radio("Submit", ["A whole matchday", "A selection"], horizontal=True, key="b_mode")
    if mode == "A whole matchday":
        c1, c2 = st.columns(2)
        league = c1.selectbox("League", [ALL_LEAGUES, *leagues], key="b_league")
        pool = [m for m in everything if league in (ALL_LEAGUES, m["league"])]
        weeks: dict[str, int] = {}
        for m in pool:
            weeks[_week_of(m["date"])] = weeks.get(_week_of(m["date"]), 0) + 1
        week = c2.selectbox(
            "Matchday (Monday to Sunday)",
            list(weeks),
            format_func=lambda w: f"week of {w} ({weeks[w]} matches)",
            key="b_week",
        )
        chosen = [m for m in pool if _week_of(m["date"]) == week]
    else:
        by_id = {m["match_id"]: m for m in everything}
        picked = st.multiselect("Matches", list(by_id), format_func=lambda i: match_label(by_id[i]), key="b_selection")
        chosen = [by_id[i] for i in picked]
    label = f"Submit {len(chosen)} prediction{'s' if len(chosen) != 1 else ''}"
    if st.button(label, type="primary", disabled=not chosen, key="b_submit"):
        st.session_state["b_job"] = _submit(ui, chosen)
    job = st.session_state.get("b_job")
    if job:
        follow(ui, job)


# --- What-if -----------------------------------------------------------------------------------------------------


def _step(f: FeatureField) -> float:
    span = f.maximum - f.minimum
    return max(10.0 ** (math.floor(math.log10(span)) - 2), 0.01) if span > 0 else 1.0


def what_if(ui: Ui) -> None:
    """A form of the inline features, bounded as the API's OpenAPI schema says, posted to POST /predict/."""
    st.title("What if…")
    st.caption("Set the model's features yourself; bounds come from the API's schema (POST /predict/).")
    try:
        fields = ui.client.inline_features()
    except ApiError as exc:
        st.error(exc.message)
        return
    form_col, result_col = st.columns([3, 2], gap="large")
    with form_col, st.form("what_if"):
        c1, c2, c3 = st.columns(3)
        home_team = c1.text_input("Home team", "Home FC", max_chars=64)
        away_team = c2.text_input("Away team", "Away FC", max_chars=64)
        when = c3.date_input("Date", value=None, help="Optional label for the answer")
        left, right = st.columns(2)
        values: dict[str, float] = {}
        for i, f in enumerate(fields):
            col = left if f.name.endswith("_home") else right if f.name.endswith("_away") else (left, right)[i % 2]
            start = min(max(TYPICAL.get(f.name, f.midpoint), f.minimum), f.maximum)
            values[f.name] = float(
                col.number_input(
                    f.title,
                    min_value=f.minimum,
                    max_value=f.maximum,
                    value=start,
                    step=_step(f),
                    help=f"{f.description} ({f.minimum:g} to {f.maximum:g})",
                    key=f"wi_{f.name}",
                )
                or start
            )
        submitted = st.form_submit_button("Predict", type="primary")
    if submitted:
        with st.spinner("Predicting…"):
            try:
                pred = ui.client.predict_inline(
                    values,
                    home_team=home_team.strip() or None,
                    away_team=away_team.strip() or None,
                    date=when.isoformat() if isinstance(when, date) else None,
                )
            except ApiError as exc:
                st.session_state["wi_result"] = {"error": exc.message}
            else:
                st.session_state["wi_result"] = {"prediction": pred}
    result = st.session_state.get("wi_result")
    with result_col:
        if not result:
            st.info("Set the features and press Predict.")
        elif "error" in result:
            st.error(result["error"])
        else:
            show_prediction(result["prediction"])


# --- Model -------------------------------------------------------------------------------------------------------


def model(ui: Ui) -> None:
    """Registry metadata of the serving model, and the evaluation summary when one has been written."""
    st.title("Model")
    try:
        info = ui.client.model_info()
    except ApiError as exc:
        st.error(exc.message)
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Name", info["name"])
    c2.metric("Version", info["version"])
    c3.metric("Alias", info["alias"])
    c4.metric("Features", info.get("feature_version") or "?")
    window = info.get("training_window") or {}
    st.markdown(
        f"**Training window** {window.get('start', '?')} to {window.get('end', '?')}"
        f" · **held-out season** {window.get('held_out_season', '?')}"
        + (f" · **registered** {info['created_at']}" if info.get("created_at") else "")
        + (f" · **run** `{info['run_id']}`" if info.get("run_id") else "")
    )
    metrics = info.get("metrics") or {}
    if metrics:
        st.subheader("Held-out metrics")
        shown = [f"{v:.0f}" if float(v).is_integer() else f"{v:.4f}" for v in metrics.values()]
        st.dataframe(pd.DataFrame({"metric": list(metrics), "value": shown}), hide_index=True)
    st.subheader("Evaluation")
    folder = ui.home / "evaluation"
    summary, calibration = folder / "summary.csv", folder / "calibration.png"
    if summary.exists():
        try:
            st.dataframe(pd.read_csv(summary), hide_index=True)
        except Exception as exc:
            st.warning(f"{summary} could not be read: {exc}")
        if calibration.exists():
            st.image(str(calibration), caption="Calibration")
        show_goal_evaluation(folder)
    else:
        st.info(
            f"No evaluation summary yet. Run `matchcast evaluate`: it writes `evaluation/summary.csv` and "
            f"`evaluation/calibration.png` under MATCHCAST_HOME ({ui.home}), and this page shows them."
        )


# --- Results so far ----------------------------------------------------------------------------------------------


LIVE_WINDOWS = {"7d": "last 7 days", "30d": "last 30 days", "season": "the season", "last200": "last 200"}


def _live_table(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for m in report["models"]:
        who = f"version {m['model_version']}" + (" (shadow)" if m["shadow"] else "")
        for window, label in LIVE_WINDOWS.items():
            w = m["windows"].get(window) or {"n": 0}
            if not w["n"]:
                continue
            model, base = w["model"], w["baseline"]
            rows.append(
                {
                    "model": who,
                    "role": m.get("role") or "",
                    "window": label,
                    "matches": w["n"],
                    "RPS": model["rps"],
                    "baseline RPS": base["rps"],
                    "log loss": model["log_loss"],
                    "Brier": model["brier"],
                    "accuracy": model["accuracy"],
                    "held-out RPS": m.get("heldout_rps"),
                }
            )
    return pd.DataFrame(rows)


def _league_table(leagues: list[dict[str, Any]]) -> pd.DataFrame:
    """``leagues`` of ``GET /monitoring/live``: the served forecasts against the baseline, per league."""
    return pd.DataFrame(
        [
            {
                "league": lg["league"],
                "matches": lg["n"],
                "RPS": lg["model"]["rps"],
                "baseline RPS": lg["baseline"]["rps"],
                "difference": lg["rps_diff"],
                "± s.e.": lg.get("rps_diff_se"),
                "accuracy": lg["model"]["accuracy"],
                "baseline accuracy": lg["baseline"]["accuracy"],
            }
            for lg in leagues
        ]
    )


def results(ui: Ui) -> None:
    """How the served forecasts fared once results arrived: ``GET /monitoring/live`` and the prediction log."""
    st.title("Results so far")
    try:
        report = ui.client.live()
        page = ui.client.live_predictions()
    except ApiError as exc:
        st.error(exc.message)
        return
    if not report["models"]:
        st.info(
            "No prediction has been scored yet. Every prediction the workers serve is logged; once a later ingest "
            "brings a match's result, the last prediction served before it counts and is scored here."
        )
        return
    st.caption(f"Windows end at the latest scored match ({report['latest_match_date']}). Rule: {report['rule']}.")
    champion = next((m for m in report["models"] if m.get("role") == "champion" and not m["shadow"]), None)
    if champion is not None:
        season = champion["windows"]["season"]
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Scored this season", season["n"])
        if season["n"]:
            c2.metric("Accuracy", f"{season['model']['accuracy']:.0%}")
            c3.metric("Mean RPS", f"{season['model']['rps']:.4f}", help="Ranked probability score: lower is better")
            c4.metric("Frequency baseline RPS", f"{season['baseline']['rps']:.4f}")
    st.dataframe(_live_table(report), hide_index=True)
    for pair in report["comparisons"]:
        w = pair["windows"]["season"]
        if w["n"]:
            se = f" ± {w['rps_diff_se']:.4f}" if w.get("rps_diff_se") is not None else ""
            st.markdown(
                f"**Challenger {pair['challenger_version']} vs champion {pair['champion_version']}** on the same "
                f"{w['n']} matches this season: RPS {w['challenger_rps']:.4f} vs {w['champion_rps']:.4f}, paired "
                f"difference {w['rps_diff']:+.4f}{se} (negative: the challenger is better)."
            )
    if report.get("leagues"):
        st.subheader("Per league, this season")
        st.dataframe(_league_table(report["leagues"]), hide_index=True)
    if page["items"]:
        st.subheader(f"Scored predictions ({page['total']}, latest first)")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "match_id": p["match_id"],
                        "date": p["date"],
                        "match": f"{p['home_team']} {p['home_goals']}-{p['away_goals']} {p['away_team']}",
                        "result": p["result"],
                        "p(result)": p["probabilities"][OUTCOME_KEYS[p["result"]]],
                        "hit": p["hit"],
                        "rps": p["rps"],
                        "baseline rps": p["baseline_rps"],
                        "version": p["model_version"],
                        "served": p["source"],
                    }
                    for p in page["items"]
                ]
            ),
            hide_index=True,
            column_config={
                "p(result)": st.column_config.NumberColumn(format="percent"),
                "rps": st.column_config.NumberColumn("RPS", format="%.4f"),
                "baseline rps": st.column_config.NumberColumn("baseline RPS", format="%.4f"),
            },
        )


PAGES: dict[str, Callable[[Ui], None]] = {
    "upcoming": upcoming,
    "batch": batch,
    "what-if": what_if,
    "model": model,
    "results": results,
}
