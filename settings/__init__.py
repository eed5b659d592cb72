"""lcp's settings: one pydantic-settings class with nested groups, read from env vars and `.env`."""

from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from temporal.constants import CONVERSATIONS_QUEUE


class TemporalSettings(BaseModel):
    """Where Temporal is: the embedded dev server by default, or a real cluster / Temporal Cloud."""

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    api_key: str | None = None
    connect_timeout_s: float = 15.0


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000


class ConversationSettings(BaseModel):
    """Limits handed to each ConversationWorkflow in its input (workflows never read settings)."""

    max_message_chars: int = 32_000
    max_turns_per_run: int = 500
    keep_messages_on_continue: int = 20
    default_model: str = "sim-llama-8b"
    task_queue: str = CONVERSATIONS_QUEUE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LCP_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Path(".lcp")
    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("DATABASE_URL", "LCP_DATABASE_URL"),
        description="SQLAlchemy async URL; empty means a SQLite file in the state dir.",
    )
    models_file: Path | None = Field(
        default=None, description="Models policy YAML; empty means policies/models.yaml."
    )
    llm_url: str = Field(
        default="http://127.0.0.1:8400/v1",
        description="Base URL of the built-in LLM simulator, used by the default models policy.",
    )
    temporal: TemporalSettings = TemporalSettings()
    api: ApiSettings = ApiSettings()
    conversation: ConversationSettings = ConversationSettings()

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        """Accept the usual postgres:// spellings; lcp talks to PostgreSQL through asyncpg."""
        for plain in ("postgres://", "postgresql://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url.removeprefix(plain)
        if url and not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "DATABASE_URL must be postgresql://... (PostgreSQL) or sqlite+aiosqlite:///path (SQLite)"
            )
        return url

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.home / 'lcp.db').resolve()}"
