"""Settings come from env vars (nested with __), DATABASE_URL, and a .env file."""

import os
from pathlib import Path

import pytest

from settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LCP_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path / '.lcp' / 'lcp.db'}"


def test_env_vars_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "LCP_TEMPORAL__ADDRESS=temporal.example:7233\nLCP_CONVERSATION__MAX_MESSAGE_CHARS=99\n"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://lcp@db/lcp")
    monkeypatch.setenv("LCP_TEMPORAL__NAMESPACE", "chat")
    settings = Settings()
    assert settings.temporal.address == "temporal.example:7233"
    assert settings.temporal.namespace == "chat"
    assert settings.conversation.max_message_chars == 99
    assert settings.resolved_database_url() == "postgresql+asyncpg://lcp@db/lcp"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db/lcp", "postgresql+asyncpg://u:p@db/lcp"),
        ("postgresql://u@db/lcp", "postgresql+asyncpg://u@db/lcp"),
        ("postgresql+asyncpg://u@db/lcp", "postgresql+asyncpg://u@db/lcp"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_use_the_async_drivers(given: str, used: str) -> None:
    assert Settings(database_url=given).resolved_database_url() == used


def test_an_unsupported_database_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL must be postgresql://"):
        Settings(database_url="mysql://u@db/lcp")
