"""One settings object, read from the environment, and documented variable for variable."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"RECALL_{field.upper()}"


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:secret@example:6380/2")
    monkeypatch.setenv("RECALL_STREAM_PARTITIONS", "16")
    monkeypatch.setenv("RECALL_WEBHOOK_SECRET", "s")
    settings = Settings()
    assert settings.redis_url == "redis://:secret@example:6380/2" and not settings.embedded
    assert settings.stream_partitions == 16 and settings.webhook_secret.get_secret_value() == "s"
    assert "s" not in repr(settings.webhook_secret)


def test_every_setting_is_in_the_readme_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README.read_text(), flags=re.MULTILINE))
    assert {env_name(field) for field in Settings.model_fields} <= documented


def test_redis_passwords_never_reach_logs_or_errors():
    from service.store.connection import redact

    assert redact("redis://:hunter2@cache:6379/0") == "redis://***@cache:6379/0"
    assert redact("unix:///run/redis.sock?db=0&password=hunter2") == "unix:///run/redis.sock?db=0&password=***"
    assert redact("rediss://cache:6380") == "rediss://cache:6380"
    assert redact("redis://:p@ss/word@cache:6379/0") == "redis://***@cache:6379/0"
