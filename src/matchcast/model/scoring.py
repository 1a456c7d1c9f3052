"""Scores of probabilistic forecasts of home/draw/away outcomes (columns in that order)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

OUTCOMES = ("H", "D", "A")
FloatArray = npt.NDArray[np.float64]


def outcome_index(results: list[str] | tuple[str, ...]) -> npt.NDArray[np.int64]:
    """'H'/'D'/'A' -> 0/1/2."""
    lookup = {o: i for i, o in enumerate(OUTCOMES)}
    return np.array([lookup[r] for r in results], dtype=np.int64)


def one_hot(y: npt.NDArray[np.int64]) -> FloatArray:
    """Outcome indices as one-hot rows."""
    out = np.zeros((len(y), 3))
    out[np.arange(len(y)), y] = 1.0
    return out


def rps(probs: FloatArray, y: npt.NDArray[np.int64]) -> float:
    """Mean ranked probability score: 1/2 x sum over the first two cumulative probabilities of squared errors."""
    return float(rps_each(probs, y).mean())


def rps_each(probs: FloatArray, y: npt.NDArray[np.int64]) -> FloatArray:
    """Ranked probability score of each forecast."""
    cum_p = np.cumsum(probs, axis=1)[:, :2]
    cum_o = np.cumsum(one_hot(y), axis=1)[:, :2]
    result: FloatArray = 0.5 * ((cum_p - cum_o) ** 2).sum(axis=1)
    return result


def mean_se(d: FloatArray) -> tuple[float, float]:
    """Mean of paired differences and its standard error (sample SD / sqrt(n); NaN below two values)."""
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()) if len(d) else float("nan"), se


def log_loss(probs: FloatArray, y: npt.NDArray[np.int64]) -> float:
    """Mean negative log likelihood of the outcome."""
    p = np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)
    return float(-np.log(p).mean())


def brier(probs: FloatArray, y: npt.NDArray[np.int64]) -> float:
    """Mean multi-class Brier score (sum over the three outcomes)."""
    return float(((probs - one_hot(y)) ** 2).sum(axis=1).mean())


def accuracy(probs: FloatArray, y: npt.NDArray[np.int64]) -> float:
    """Share of matches whose most likely outcome happened."""
    return float((probs.argmax(axis=1) == y).mean())


def all_scores(probs: FloatArray, y: npt.NDArray[np.int64]) -> dict[str, float]:
    """RPS, log loss, Brier score, accuracy and count."""
    return {
        "rps": rps(probs, y),
        "log_loss": log_loss(probs, y),
        "brier": brier(probs, y),
        "accuracy": accuracy(probs, y),
        "n": float(len(y)),
    }
