"""MLflow behind a small adapter: log and register a fitted model, move aliases, load by alias."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matchcast.errors import InvalidInput, ModelNotFound, ServiceUnavailable
from matchcast.model.goals import GoalsModel
from matchcast.model.predictor import Predictor

log = logging.getLogger(__name__)
EXPERIMENT = "matchcast"
EVALUATION_EXPERIMENT = "matchcast-evaluation"


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version ready to predict."""

    name: str
    version: str
    alias: str
    run_id: str | None
    predictor: Predictor
    feature_version: str | None


@dataclass(frozen=True)
class VersionInfo:
    """Registry metadata of one version."""

    name: str
    version: str
    alias: str
    run_id: str | None
    created_at: datetime | None
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]


def code_version() -> str:
    """The package version and, in a git checkout, the commit."""
    from matchcast import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


class ModelRegistry:
    """One registered model name in one MLflow tracking store and registry."""

    def __init__(self, tracking_uri: str, registry_uri: str, name: str, artifact_location: str | None = None):
        self.tracking_uri, self.registry_uri, self.name = tracking_uri, registry_uri, name
        self.artifact_location = artifact_location
        for uri in (tracking_uri, registry_uri):
            if uri.startswith("sqlite:///"):
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def log_and_register(
        self,
        pipeline: Any,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Log a fitted sklearn pipeline with its run data; register it; return the new version.

        ``metadata`` (JSON) is stored in the model itself (its MLmodel file): the goals model lives there."""
        import mlflow
        import mlflow.sklearn

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        client = self._client()
        exp = client.get_experiment_by_name(EXPERIMENT)
        exp_id = (
            exp.experiment_id if exp else client.create_experiment(EXPERIMENT, artifact_location=self.artifact_location)
        )
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            for fname, obj in (artifacts or {}).items():
                mlflow.log_text(json.dumps(obj, indent=2, default=str), fname)
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                registered_model_name=self.name,
                serialization_format="cloudpickle",
                metadata=metadata,
            )
            version = str(info.registered_model_version)
            for k, v in tags.items():
                client.set_model_version_tag(self.name, version, k, v)
            log.info("registered %s version %s (run %s)", self.name, version, run.info.run_id)
            return version

    def log_evaluation(
        self,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        files: list[Path],
        experiment: str = EVALUATION_EXPERIMENT,
    ) -> str:
        """Log an evaluation run (no model) with its files as artifacts; return the run id."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        client = self._client()
        exp = client.get_experiment_by_name(experiment)
        location = f"{self.artifact_location.rstrip('/')}/{experiment}" if self.artifact_location else None
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=location)
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            for path in files:
                mlflow.log_artifact(str(path))
            log.info("logged evaluation run %s to experiment %s", run.info.run_id, experiment)
            return str(run.info.run_id)

    def annotate_run(
        self, run_id: str, *, metrics: dict[str, float], tags: dict[str, str], documents: dict[str, Any]
    ) -> None:
        """Add metrics, tags and JSON documents (artifact path -> object) to a finished run."""
        client = self._client()
        for k, v in metrics.items():
            client.log_metric(run_id, k, v)
        for k, t in tags.items():
            client.set_tag(run_id, k, t)
        for path, doc in documents.items():
            client.log_dict(run_id, doc, path)

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``."""
        self._client().set_registered_model_alias(self.name, alias, version)

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias``."""
        self._client().delete_registered_model_alias(self.name, alias)

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a version (e.g. a record of its promotion)."""
        client = self._client()
        for k, v in tags.items():
            client.set_model_version_tag(self.name, version, k, v)

    def version_of(self, alias: str) -> str | None:
        """The version an alias points at, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client().get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def info(self, alias: str | None = None, *, version: str | None = None) -> VersionInfo:
        """Metadata of the version an alias points at (or of a version by number)."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            if version is not None:
                mv = client.get_model_version(self.name, version)
            else:
                mv = client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                what = f"version {version}" if version is not None else f"a version with alias {alias!r}"
                raise ModelNotFound(f"model {self.name!r} has no {what}") from exc
            raise ServiceUnavailable(f"model registry: {type(exc).__name__}", ["registry"]) from exc
        alias = alias or ",".join(getattr(mv, "aliases", []) or [])
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if mv.run_id:
            run = client.get_run(mv.run_id)
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC) if mv.creation_timestamp else None
        return VersionInfo(self.name, str(mv.version), alias, mv.run_id, created, dict(mv.tags), metrics, params)

    def load(self, alias: str) -> LoadedModel:
        """Load the version an alias points at, resolved once so a concurrent move cannot mix versions."""
        import mlflow
        import mlflow.models
        import mlflow.sklearn

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        info = self.info(alias)
        uri = f"models:/{self.name}/{info.version}"
        pipe = mlflow.sklearn.load_model(uri)
        names = tuple(json.loads(info.tags.get("feature_names", "[]")))
        predictor = Predictor.from_pipeline(pipe, names)
        stored = (mlflow.models.get_model_info(uri).metadata or {}).get("goals_model")
        # A version registered before goals models has none: its grid comes from the features (see Predictor).
        if stored is not None:
            try:
                predictor = predictor.with_goals(GoalsModel.from_dict(stored, len(names)))
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInput(
                    f"model {self.name!r} version {info.version} has an unusable goals model ({exc}); retrain it"
                ) from exc
        log.info("loaded model %s version %s (alias %s) in process %d", self.name, info.version, alias, os.getpid())
        return LoadedModel(self.name, info.version, alias, info.run_id, predictor, info.tags.get("feature_version"))
