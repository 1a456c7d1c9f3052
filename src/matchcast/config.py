"""Settings: the only module that reads the environment (``MATCHCAST_*`` variables)."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

ML_QUEUE = "ml"
PREDICT_TASK = "predict_match"
REGISTERED_MODEL_NAME = "matchcast"
CHAMPION_ALIAS = "champion"


class Settings(BaseSettings):
    """Everything matchcast can be told from outside, with embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="MATCHCAST_", frozen=True, extra="ignore")

    home: Path = Field(default=Path.home() / ".matchcast", description="Folder for embedded state")
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    model_name: str = REGISTERED_MODEL_NAME
    model_alias: str = CHAMPION_ALIAS

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    sync_timeout_s: float = Field(default=30.0, gt=0, le=300)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    task_ttl_s: int = Field(default=24 * 3600, ge=60)
    readiness_timeout_s: float = Field(default=2.0, gt=0)

    worker_concurrency: int = Field(default=2, ge=1, le=64)
    worker_metrics_port: int = Field(default=9808, ge=0, le=65535)
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    prometheus_multiproc_dir: Path | None = None

    embedded_redis_port: int = Field(default=6390, ge=1, le=65535)
    demo_as_of: date | None = date(2026, 4, 1)
    log_level: str = "INFO"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def embedded(self) -> bool:
        """True when no broker is configured: ``matchcast up`` then runs its own Redis."""
        return self.broker_url is None

    def resolved_database_url(self) -> str:
        """The match store's URL; a SQLite file under ``home`` by default."""
        return self.database_url or f"sqlite:///{self.home / 'matchcast.db'}"

    def resolved_broker_url(self) -> str:
        """The broker URL, or the embedded Redis server's."""
        return self.broker_url or f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    def resolved_result_backend(self) -> str:
        """The result backend URL, or the embedded Redis server's."""
        return self.result_backend or f"redis://127.0.0.1:{self.embedded_redis_port}/1"

    def resolved_tracking_uri(self) -> str:
        """MLflow tracking store; a SQLite file under ``home`` by default."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    def resolved_registry_uri(self) -> str:
        """MLflow model registry; the tracking store unless told otherwise."""
        return self.mlflow_registry_uri or self.resolved_tracking_uri()

    def artifact_location(self) -> str:
        """Where a new experiment keeps its artifacts when the tracking store is local."""
        return (self.home / "mlartifacts").as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
