"""The UI's own record of the predictions it showed, and how they fared once results are known.

Each prediction of a stored match that the UI receives (sync or batch) is appended as one JSON line to
``$MATCHCAST_HOME/ui/predictions.jsonl``. The "Results so far" page reads it back and asks the API for each
match (``GET /predict/matches/{match_id}``, read-only), which carries the score once a later ingest has it.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OUTCOME_CODES = {"H": "home", "D": "draw", "A": "away"}
_lock = threading.Lock()


class PredictionLog:
    """Append-only JSON lines, one per prediction the UI received."""

    def __init__(self, home: Path) -> None:
        self.path = home / "ui" / "predictions.jsonl"

    def add(self, prediction: dict[str, Any], *, source: str) -> bool:
        """Record a prediction of a stored match; inline (what-if) predictions have no match and are skipped."""
        if prediction.get("match_id") is None:
            return False
        keep = (
            "match_id",
            "league",
            "home_team",
            "away_team",
            "date",
            "probabilities",
            "model_version",
            "predicted_at",
        )
        line = {k: prediction.get(k) for k in keep} | {
            "source": source,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with _lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first (a damaged line is skipped, not fatal)."""
        if not self.path.exists():
            return []
        out = []
        for raw in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if (
                isinstance(rec, dict)
                and isinstance(rec.get("match_id"), int)
                and isinstance(rec.get("probabilities"), dict)
            ):
                out.append(rec)
        return out

    def latest_by_match(self) -> dict[int, dict[str, Any]]:
        """The most recent record of each match."""
        latest: dict[int, dict[str, Any]] = {}
        for rec in self.records():
            latest[rec["match_id"]] = rec
        return latest


@dataclass(frozen=True)
class Scored:
    """One recorded prediction next to the actual result."""

    match_id: int
    match: str
    date: str
    predicted: str
    actual: str
    p_actual: float
    hit: bool
    rps: float
    log_loss: float
    model_version: str


def score(probabilities: dict[str, float], result: str) -> tuple[str, bool, float, float, float]:
    """(predicted code, hit, ranked probability score, log loss, probability of the result) for ``H``/``D``/``A``."""
    p = [float(probabilities[o]) for o in ("home", "draw", "away")]
    o = [1.0 if result == code else 0.0 for code in ("H", "D", "A")]
    rps = ((p[0] - o[0]) ** 2 + (p[0] + p[1] - o[0] - o[1]) ** 2) / 2
    p_actual = p[("H", "D", "A").index(result)]
    predicted = ("H", "D", "A")[max(range(3), key=lambda i: p[i])]
    return predicted, predicted == result, rps, -math.log(max(p_actual, 1e-15)), p_actual


@dataclass
class ResultsSoFar:
    """The recorded predictions whose result is known, scored; and how many still wait."""

    scored: list[Scored]
    awaiting: int
    unavailable: list[str]

    def summary(self) -> dict[str, float]:
        """Count, accuracy, mean RPS and mean log loss of the scored predictions."""
        n = len(self.scored)
        if not n:
            return {"n": 0}
        return {
            "n": n,
            "accuracy": sum(s.hit for s in self.scored) / n,
            "rps": sum(s.rps for s in self.scored) / n,
            "log_loss": sum(s.log_loss for s in self.scored) / n,
        }


def results_so_far(
    records: Iterable[dict[str, Any]], fetch_match: Callable[[int], dict[str, Any]], *, limit: int = 500
) -> ResultsSoFar:
    """Score the latest record of each match whose result ``fetch_match`` reports (at most ``limit`` matches)."""
    latest: dict[int, dict[str, Any]] = {}
    for rec in records:
        latest[rec["match_id"]] = rec
    scored, awaiting, unavailable = [], 0, []
    for match_id, rec in list(latest.items())[-limit:]:
        try:
            match = fetch_match(match_id)
        except Exception as exc:
            unavailable.append(f"{match_id}: {getattr(exc, 'message', exc)}")
            continue
        result = match.get("result")
        if result not in OUTCOME_CODES:
            awaiting += 1
            continue
        predicted, hit, rps, ll, p_actual = score(rec["probabilities"], result)
        scored.append(
            Scored(
                match_id=match_id,
                match=f"{match.get('home_team')} {match.get('home_goals')}-{match.get('away_goals')} "
                f"{match.get('away_team')}",
                date=str(match.get("date")),
                predicted=predicted,
                actual=result,
                p_actual=p_actual,
                hit=hit,
                rps=rps,
                log_loss=ll,
                model_version=str(rec.get("model_version")),
            )
        )
    scored.sort(key=lambda s: (s.date, s.match_id))
    return ResultsSoFar(scored, awaiting, unavailable)
