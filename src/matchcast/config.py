"""Settings: the only module that reads the environment (``MATCHCAST_*`` variables)."""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

REGISTERED_MODEL_NAME = "matchcast"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


class Settings(BaseSettings):
    """Everything matchcast can be told from outside, with embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="MATCHCAST_", frozen=True, extra="ignore")

    home: Path = Field(default=Path.home() / ".matchcast", description="Folder for embedded state")
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    result_backend_master_name: str = Field(
        default="matchcast", description="With a sentinel:// result backend: the master's name at the Sentinels"
    )
    result_backend_wait_replicas: int = Field(
        default=0, ge=0, le=16, description="Replicas that must have a task record or result before it counts (WAIT)"
    )
    result_backend_wait_ms: int = Field(default=100, ge=1, le=10000, description="Longest WAIT for those replicas")
    result_backend_retry_s: float = Field(
        default=2.0, gt=0, le=300, description="How long a worker retries a result write (cover a failover)"
    )
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    model_name: str = REGISTERED_MODEL_NAME
    model_alias: str = CHAMPION_ALIAS

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64, description="API processes sharing the port (uvicorn workers)")
    sync_timeout_s: float = Field(default=30.0, gt=0, le=300)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    api_fast_path: bool = Field(
        default=True, description="Answer everyday prediction requests below FastAPI's routing (api/fastpath.py)"
    )
    markets: bool = Field(
        default=True, description="Predictions carry expected goals and the goal markets of their scoreline grid"
    )
    # Prediction log and live scores (README "Live scores").
    prediction_log: bool = Field(default=True, description="Workers record every prediction served in the store")
    prediction_log_flush_s: float = Field(default=1.0, gt=0, le=60, description="Log rows are written this often")
    prediction_log_flush_rows: int = Field(default=500, ge=1, le=10000, description="...or once this many wait")
    prediction_log_buffer_rows: int = Field(
        default=100_000, ge=100, description="Rows a worker process holds while the store is slow; more are dropped"
    )
    prediction_log_keep_days: float = Field(
        default=30.0, gt=0, description="Log rows older than this are pruned, unless they count or may still count"
    )
    prediction_log_prune_every_s: float = Field(
        default=24 * 3600.0, ge=0, description="How often beat sends prune_prediction_log (daily); 0: never"
    )
    shadow: bool = Field(default=True, description="While a `challenger` alias exists, workers also predict with it")
    live_cache_s: float = Field(default=5.0, ge=0, le=3600, description="GET /monitoring/live figures are reused")
    live_refresh_s: float = Field(
        default=60.0, ge=0, le=86400, description="The API recomputes the live gauges this often; 0: only on request"
    )
    task_ttl_s: int = Field(default=24 * 3600, ge=60)
    task_gone_s: int = Field(
        default=24 * 3600, ge=0, le=7 * 24 * 3600, description="After expiry, ids answer 410 (not 404) this long"
    )
    sse_streams_per_key: int = Field(default=16, ge=1, le=10000, description="Open event streams per key and process")
    sse_keepalive_s: float = Field(default=15.0, gt=0, le=300, description="Comment line sent on a quiet stream")
    readiness_timeout_s: float = Field(default=2.0, gt=0)

    task_max_retries: int = Field(default=3, ge=0, le=20, description="Retries of a transient failure")
    task_retry_backoff_max_s: int = Field(default=30, ge=1, le=600)
    task_time_limit_s: int = Field(default=60, ge=2, le=3600)
    delivery_limit: int = Field(default=5, ge=1, le=100, description="RabbitMQ redeliveries before dead-lettering")
    visibility_timeout_s: int = Field(default=300, ge=10, description="Redis broker: redelivery of unacked tasks")
    max_backlog: int = Field(default=20000, ge=1, description="Async submissions get 429 past this ml depth")
    backlog_sample_s: float = Field(default=0.5, gt=0)
    fair_share: bool = Field(
        default=True, description="Batches of each API key wait in a bulk sub-queue of their own (ml.bulk.0..3)"
    )
    dead_letter_retention_days: int = Field(default=30, ge=1)

    worker_concurrency: int = Field(default=2, ge=1, le=64)
    worker_lane: Literal["all", "interactive", "bulk", "maintenance"] = Field(
        default="all",
        description="Queues a worker serves: interactive (ml.interactive), bulk (ml, ml.bulk, ml.bulk.N), maintenance "
        "(ml.maintenance), or all",
    )
    sync_group_max: int = Field(
        default=256, ge=1, le=1000, description="Most sync requests one API process sends in one message"
    )
    sync_groups_in_flight: int = Field(
        default=2, ge=1, le=64, description="Sync groups one API process has out at a time (sent, not answered)"
    )
    worker_prefetch: int = Field(default=4, ge=1, le=1000)
    bulk_prefetch: int = Field(
        default=1, ge=1, le=1000, description="Prefetch multiplier of a bulk-lane worker: 1 holds only what it runs"
    )
    model_refresh_s: float = Field(default=10.0, ge=0.5, description="How often workers look for a new champion")
    feature_revisions_refresh_s: float = Field(
        default=2.0, gt=0, le=300, description="How often the API reads the feature revisions changed since"
    )
    retrain_every_s: float = Field(
        default=7 * 24 * 3600.0, ge=0, description="How often beat sends retrain_model (weekly); 0: never"
    )
    retrain_weeks: int = Field(default=8, ge=1, le=52, description="Weeks with results the retraining gate compares")
    retrain_from: date | None = Field(
        default=None, description="First match date a retrain fits on (all results when unset); bounds tests"
    )
    retrain_time_limit_s: int = Field(default=1800, ge=60, le=6 * 3600, description="Hard limit of retrain_model")
    worker_metrics_port: int = Field(default=9808, ge=0, le=65535)
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    worker_shutdown_grace_s: float = Field(
        default=20.0, gt=0, le=3600, description="SIGTERM: running tasks get this long to finish, then are handed back"
    )
    prometheus_multiproc_dir: Path | None = None

    ui_host: str = "127.0.0.1"
    ui_port: int = Field(default=8501, ge=0, le=65535, description="Streamlit UI port; 0: `matchcast up` starts no UI")
    ui_api_url: str | None = Field(default=None, description="API the UI talks to; this machine's API by default")
    ui_api_key: SecretStr | None = Field(default=None, description="Sent by the UI as X-API-Key when set")

    # Feeds (README "Feeds"): where results and fixtures come from, how often, and what a source may send.
    feeds: str | None = Field(
        default=None,
        description="Feed list: JSON ([{name, url, league?}]) or the path of a .json/.toml file; "
        "HOME/feeds.toml or HOME/feeds.json when unset",
    )
    feeds_interval_s: float = Field(default=300.0, ge=0, description="Beat ingests every feed this often; 0: never")
    feeds_stale_s: float = Field(default=6 * 3600.0, gt=0, description="/ready notes a feed not read for this long")
    feed_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, description="Largest feed file or upload accepted")
    feed_timeout_s: float = Field(default=15.0, gt=0, le=300, description="Connect and read timeout of a feed")
    feed_max_redirects: int = Field(default=3, ge=0, le=20, description="Redirects a feed may answer with")
    maintenance_time_limit_s: int = Field(default=900, ge=10, le=24 * 3600, description="Time limit of a feed ingest")

    embedded_redis_port: int = Field(default=6390, ge=1, le=65535)
    demo_as_of: date | None = date(2026, 4, 1)
    log_level: str = "INFO"

    # Security (README "Security"): API keys, probe exposure, rate limits, callback URL policy.
    auth: Literal["required", "off"] = Field(default="required", description="`off`: no API keys, loopback only")
    probes_auth: Literal["open", "predict", "admin"] = Field(
        default="open", description="Who may call /health, /ready and /metrics: anyone, or keys of this role"
    )
    api_key_cache_s: float = Field(default=10.0, ge=0, le=3600, description="How long a verified key is trusted")
    rate_limit_per_s: float = Field(default=20.0, ge=0, description="Requests per second per key; 0: no limit")
    rate_limit_burst: int = Field(default=40, ge=1, description="Token bucket size per key")
    callback_allowed_hosts: str = Field(default="", description="Comma list of callback hosts allowed as they are")
    callback_allow_private: bool = Field(default=False, description="Allow private and loopback callback addresses")
    callback_secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key signing callback bodies")
    callback_max_attempts: int = Field(default=5, ge=1, le=20)
    callback_timeout_s: float = Field(default=5.0, gt=0, le=60)

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

    def resolved_ui_api_url(self) -> str:
        """The API URL the UI calls: ``MATCHCAST_UI_API_URL``, else this machine's API."""
        if self.ui_api_url:
            return self.ui_api_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("", "0.0.0.0", "::") else self.api_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.api_port}"

    def team_aliases_path(self) -> Path:
        """The user's team-name aliases (``{"source name": "store name"}``), applied over the bundled ones."""
        return self.home / "team_aliases.json"

    def beat_schedule_path(self) -> Path:
        """Where ``matchcast beat`` keeps its schedule (when each entry last ran)."""
        return self.home / "beat" / "celerybeat-schedule"

    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts when the tracking store is local; ``None`` for a tracking
        server, which decides itself (``mlflow server --serve-artifacts``: over HTTP, so no host needs its disk)."""
        if self.resolved_tracking_uri().startswith(("http://", "https://")):
            return None
        return (self.home / "mlartifacts").as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings (other ``MATCHCAST_*`` variables dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHCAST_")}
    for name, value in settings.model_dump(exclude={"embedded"}).items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[f"MATCHCAST_{name.upper()}"] = str(value)
    return env


# Redaction: what is shown of a URL, an exception text or a log line, never a password, token or API key.
MASK = "***"
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|sig|signature)=)[^&;#\s]*"
)
_API_KEY = re.compile(r"\b(mc_[0-9a-f]{12}_)[A-Za-z0-9_-]+")


def redact_url(url: str) -> str:
    """A URL safe to print or log: its password and secret query values masked (``amqp://user:***@host//``).

    A failover list (``amqp://a;amqp://b``, as kombu takes a broker cluster) is masked URL by URL."""
    if ";" in url and "://" in url.split(";", 1)[1]:
        return ";".join(redact_url(part) for part in url.split(";"))
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    shown = url
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            shown = shown.replace(parts.netloc, f"{user}:{MASK}@{host}", 1)
    if parts.query:
        shown = shown.replace(parts.query, _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, "?" + parts.query)[1:], 1)
    return shown


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret these settings hold (URL passwords, SecretStr settings), as they may appear in any text."""
    found: set[str] = set()
    urls = (settings.database_url, settings.broker_url, settings.result_backend)
    every = (*urls, settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    for url in (part for u in every if u for part in u.split(";")):  # a broker failover list: each of its URLs
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            continue
        if password:
            found |= {password, unquote(password)}
    for name in type(settings).model_fields:  # every SecretStr setting (UI key, callback secret, ...)
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.add(value.get_secret_value())
    return tuple(sorted((s for s in found if len(s) >= 3), key=len, reverse=True))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with URL passwords, API keys and each of ``secrets`` masked."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _API_KEY.sub(lambda m: m.group(1) + MASK, text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """A log formatter that masks secrets in the whole formatted record, traceback included."""

    def __init__(self, fmt: str | None = None, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        """The record as the base formatter writes it, redacted."""
        return redact_text(super().format(record), self.secrets)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``MATCHCAST_LOG_LEVEL``, every line redacted; quiet the chattiest libraries."""
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # no password, token or API key reaches a log line
        handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets_of(settings)))
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
