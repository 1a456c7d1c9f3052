"""Secrets never shown: URLs, exception texts and log lines are redacted."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from matchcast.config import RedactingFormatter, Settings, redact_text, redact_url, secrets_of


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:S3cret@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        ("redis://:S3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://default:p%40ss%3Aw@redis:6379/0", "redis://default:***@redis:6379/0"),
        ("postgresql+psycopg://app:pw@@db:5432/matchcast", "postgresql+psycopg://app:***@db:5432/matchcast"),
        ("postgresql+psycopg://app@db/matchcast", "postgresql+psycopg://app@db/matchcast"),
        ("https://mlflow.example.org/?token=abc&x=1", "https://mlflow.example.org/?token=***&x=1"),
        ("sqlite:////home/u/.matchcast/matchcast.db", "sqlite:////home/u/.matchcast/matchcast.db"),
        (  # a broker cluster as a failover list: every URL masked, not only the first
            "amqp://mc:pw1@broker-1:5672//;amqp://mc:pw2@broker-2:5672//",
            "amqp://mc:***@broker-1:5672//;amqp://mc:***@broker-2:5672//",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_secrets_of_settings_and_redact_text(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        broker_url="amqp://user:Br0ker%2Fpw@rabbit//",
        result_backend="redis://:R3dis-pw@redis:6379/0",
        database_url="postgresql+psycopg://app:Db-pw-123@db/matchcast",
        mlflow_tracking_uri="https://ml:Mlf-pw@mlflow.example.org",
        ui_api_key="Ui-key-456",
    )
    found = secrets_of(settings)
    assert {"Br0ker/pw", "Br0ker%2Fpw", "R3dis-pw", "Db-pw-123", "Mlf-pw", "Ui-key-456"} <= set(found)
    text = (
        "failed: connection to redis at redis:6379 with password R3dis-pw refused; "
        "url=amqp://user:Br0ker/pw@rabbit// and FATAL: password 'Db-pw-123' and key mc_0123456789ab_" + "Z" * 43
    )
    out = redact_text(text, found)
    for secret in ("R3dis-pw", "Br0ker/pw", "Db-pw-123", "Z" * 43):
        assert secret not in out
    assert "mc_0123456789ab_***" in out and "redis:6379" in out


def test_formatter_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s", ("T0p-Secret",)))
    log = logging.getLogger("matchcast.test-redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("connecting to %s", "amqp://u:T0p-Secret@h//")
        try:
            raise ConnectionError("could not reach redis://:T0p-Secret@h:6379/0")
        except ConnectionError:
            log.exception("backend down, password T0p-Secret")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "T0p-Secret" not in out
    assert "amqp://u:***@h//" in out and "ConnectionError" in out and "Traceback" in out


def test_every_password_of_a_failover_list_is_a_secret(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, broker_url="amqp://mc:first-pw@b1:5672//;amqp://mc:second-pw@b2:5672//")
    assert {"first-pw", "second-pw"} <= set(secrets_of(settings))
    assert "second-pw" not in redact_text("cannot reach amqp://mc:second-pw@b2:5672//", secrets_of(settings))
