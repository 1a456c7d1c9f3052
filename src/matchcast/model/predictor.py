"""The predictor: a fitted model reduced to a few numpy arrays, fast for one row or a season."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from matchcast.errors import InvalidInput
from matchcast.model.goals import GoalsModel, score_grids
from matchcast.model.scoring import FloatArray

DEFAULT_C = 0.01  # chosen by walk-forward RPS on 2014/15-2018/19


def make_pipeline(c: float = DEFAULT_C, *, warm_start: bool = False) -> Pipeline:
    """The model: standardised features into a regularised multinomial logistic regression.

    With ``warm_start`` a refit starts from the previous fit's coefficients (same optimum, fewer iterations).
    """
    clf = LogisticRegression(C=c, max_iter=2000, warm_start=warm_start)
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def fit_before(
    pipe: Pipeline, x: FloatArray, y: np.ndarray, rows: np.ndarray, names: tuple[str, ...], when: date
) -> Predictor:
    """Fit ``pipe`` on the rows of ``rows`` (a mask: the matches before ``when``) and reduce it to a Predictor."""
    if len(np.unique(y[rows])) < 3:
        raise InvalidInput(f"too few finished matches before {when} to fit the model")
    pipe.fit(x[rows], y[rows])
    return Predictor.from_pipeline(pipe, names)


@dataclass(frozen=True)
class Predictor:
    """Home/draw/away probabilities from a standardised linear softmax model, and the score grid around them.

    ``goals`` is the goals model fitted with the classifier; None (a model registered before goals models)
    falls back to the features' own goal expectations (``GoalsModel.from_features``)."""

    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: FloatArray
    feature_names: tuple[str, ...]
    goals: GoalsModel | None = None

    @classmethod
    def from_pipeline(cls, pipe: Pipeline, feature_names: tuple[str, ...]) -> Predictor:
        """Extract the arrays of a fitted ``make_pipeline`` pipeline (classes 0, 1, 2 = H, D, A)."""
        scaler: StandardScaler = pipe.named_steps["scale"]
        clf: LogisticRegression = pipe.named_steps["clf"]
        if list(clf.classes_) != [0, 1, 2]:
            raise ValueError(f"expected classes [0, 1, 2], got {list(clf.classes_)}")
        return cls(  # copies: a warm-started refit of ``pipe`` must not change this predictor
            np.array(scaler.mean_, dtype=np.float64),
            np.array(scaler.scale_, dtype=np.float64),
            np.array(clf.coef_, dtype=np.float64),
            np.array(clf.intercept_, dtype=np.float64),
            feature_names,
        )

    def with_goals(self, goals: GoalsModel | None) -> Predictor:
        """This predictor with another goals model."""
        return replace(self, goals=goals)

    def _standardised(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {x.shape[1]}")
        return x, (x - self.mean) / self.scale

    def standardise(self, x: FloatArray) -> FloatArray:
        """Features scaled as the model sees them (the goals model's inputs)."""
        return self._standardised(x)[1]

    def _softmax(self, z: FloatArray) -> FloatArray:
        logits = z @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out: FloatArray = e / e.sum(axis=1, keepdims=True)
        return out

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Rows of (home, draw, away) probabilities for rows of features."""
        return self._softmax(self._standardised(x)[1])

    def predict_grid(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The served 1X2 (n, 3) and each match's score grid conformed to it (n, 11, 11); see ``model.goals``."""
        x, z = self._standardised(x)
        goals = self.goals or GoalsModel.from_features(self.feature_names)
        return score_grids(goals, x, z, self._softmax(z))
