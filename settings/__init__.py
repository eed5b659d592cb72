"""lcp's settings: one pydantic-settings class with nested groups, read from env vars and `.env`."""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from temporal.constants import CONVERSATIONS_QUEUE, FORECASTING_QUEUE, OPS_QUEUE


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
    with_worker: bool = Field(
        default=False, description="Also run the conversation worker in the API process (as `lcp dev` does)."
    )
    token_relay: Literal["auto", "memory", "postgres"] = Field(
        default="auto",
        description="How streamed tokens reach the API: postgres (LISTEN/NOTIFY, any process layout) "
        "or memory (API and worker in one process); auto picks postgres when the read model is on it.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest request body the API reads; larger ones are a 413, refused as they arrive. "
        "The default holds a 128k-token chat history sent whole, or a 32,000-character message even "
        "written as JSON escapes, with room to spare.",
    )
    database_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a request's key lookup and limit check (and, on PostgreSQL, each of its "
        "statements and connections) wait for the database: past it (or when the database is unreachable) "
        "the request is refused with a 503 and Retry-After, never admitted unlimited, never hung. 5 s "
        "leaves room for a SQLite write lock on a busy machine.",
    )


class TurnAdmissionSettings(BaseModel):
    """Durable turns each API process lets into Temporal at once: a limit that keeps lcp's own part of a
    turn near a target; the turns past it wait in the API, the tenants in turn, so one tenant's burst does
    not slow another's turns."""

    enabled: bool = True
    target_s: float = Field(
        default=0.15,
        gt=0,
        description="Median seconds of lcp's own part of a turn (API, Temporal, worker; not the model) the "
        "limit keeps turns near; raised for 10 minutes when even the minimum limit cannot reach it.",
    )
    initial_limit: int = Field(default=16, ge=1, description="The limit a process starts with; it adapts.")
    min_limit: int = Field(default=4, ge=1, description="The least the limit comes down to.")
    max_limit: int = Field(default=1000, ge=1, description="The most the limit grows to.")
    max_waiting: int = Field(
        default=1000,
        ge=1,
        description="Turns that may wait in one API process; past it, the tenant with the most waiting "
        "gives up its newest (503 with Retry-After).",
    )
    max_wait_s: float = Field(
        default=30.0, gt=0, description="How long a turn waits for its turn before a 503 with Retry-After."
    )

    @model_validator(mode="after")
    def _limits_in_order(self) -> "TurnAdmissionSettings":
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("turn admission needs min_limit <= initial_limit <= max_limit")
        return self


class ConversationSettings(BaseModel):
    """Limits handed to each ConversationWorkflow in its input (workflows never read settings), the
    conversation worker's cache, and how the API lets turns in."""

    max_message_chars: int = 32_000
    max_turns_per_run: int = 500
    keep_messages_on_continue: int = 20
    default_model: str = "sim-llama-8b"
    task_queue: str = CONVERSATIONS_QUEUE
    cached_workflows: int = Field(
        default=1000,
        ge=1,
        description="Open conversations the conversation worker keeps in memory (Temporal's sticky cache), "
        "about 0.6 MB each; past it, the least recent is evicted, and replayed from its history on its next "
        "turn.",
    )
    admission: TurnAdmissionSettings = TurnAdmissionSettings()


class OidcSettings(BaseModel):
    """Bearer JWTs from an OpenID Connect issuer (e.g. a Keycloak realm); off while `issuer` is empty."""

    issuer: str = ""
    audience: str = ""
    jwks_url: str = Field(
        default="", description="Empty: read jwks_uri from the issuer's discovery document."
    )
    tenant_claim: str = Field(default="tenant", description="Dotted path of the claim naming the tenant.")
    roles_claim: str = Field(default="realm_access.roles", description="Dotted path of the roles list.")
    role_map: dict[str, str] = Field(
        default_factory=dict,
        description="Issuer role -> lcp role (client, admin, sre, platform); unmapped roles named client "
        "or admin map to themselves, while sre and platform are granted only through an entry here.",
    )
    default_tenant: str = Field(default="", description="Tenant for tokens without the tenant claim.")
    algorithms: list[str] = ["RS256", "ES256", "PS256"]
    leeway_s: float = 30.0
    jwks_cache_s: float = 3600.0
    jwks_refresh_min_s: float = Field(
        default=5.0, description="Least time between two JWKS fetches caused by an unknown kid."
    )


class AuthSettings(BaseModel):
    """How much failed authentication one client address may cost each API process before a 429."""

    failures_burst: int = Field(
        default=20, ge=1, description="Failed authentications an address may make in a row before a 429."
    )
    failures_per_minute: float = Field(
        default=10.0, gt=0, description="How fast an address earns those attempts back once it has used them."
    )


class MetricsSettings(BaseModel):
    """Who may read the API's /metrics: anyone (without tenant-labelled series) or a scraper with a token."""

    token: SecretStr | None = Field(
        default=None,
        description="Bearer token a scraper sends to /metrics; when set, /metrics refuses everyone else and "
        "serves every series, tenant-labelled ones included. Empty: /metrics is open and leaves those out.",
    )


class RateLimit(BaseModel):
    """Requests and tokens per minute; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class KeyLimit(RateLimit):
    """Defaults for keys that carry no limits of their own."""

    requests_per_minute: int | None = 1200
    tokens_per_minute: int | None = 1_000_000


class LimitSettings(BaseModel):
    """Default limits per API key and per tenant, and per-tenant overrides (keys may carry their own)."""

    per_key: KeyLimit = KeyLimit()
    per_tenant: RateLimit = RateLimit()
    tenants: dict[str, RateLimit] = Field(default_factory=dict)


class RolloutSettings(BaseModel):
    """Canary rollouts: where the ops worker finds the cluster and Prometheus, and analysis defaults."""

    task_queue: str = OPS_QUEUE
    kubeconfig: Path | None = Field(
        default=None, description="Empty: the lab's kubeconfig under the state dir (what `lcp dev` writes)."
    )
    kube_context: str | None = None
    prometheus_url: str = "http://127.0.0.1:9090"
    templates_file: Path | None = Field(
        default=None, description="Metric templates YAML; empty means policies/analysis.yaml."
    )
    min_window_s: float = Field(
        default=10.0, gt=0, description="Shortest PromQL rate window: at least two scrape intervals."
    )


class ScalingSettings(BaseModel):
    """Predictive scaling: its workflows run on the ops queue (rollout.task_queue, with its kubeconfig and
    Prometheus); the forecaster trains and predicts on a queue of its own."""

    forecast_task_queue: str = FORECASTING_QUEUE


class ChaosSettings(BaseModel):
    """Chaos experiments and scenarios: the catalogues the API runs by name, and the safety policy every
    run obeys."""

    catalogue_file: Path | None = Field(
        default=None, description="Experiments YAML; empty means chaos/catalogue.yaml (the lab demo's)."
    )
    scenarios_file: Path | None = Field(
        default=None, description="Scenarios YAML; empty means chaos/scenarios.yaml (the lab demo's)."
    )
    workload_url: str = Field(
        default="http://127.0.0.1:8601",
        description="What the catalogue's {{workload}} stands for: the lab's workload simulator (lcp dev "
        "sets it from --workload-port).",
    )
    allowed_namespaces: list[str] = Field(default_factory=lambda: ["lab"])
    max_pods_affected_perc: float = Field(default=50.0, gt=0, le=100, description="Blast-radius limit.")


class ToolSettings(BaseModel):
    """Assistants' tools: where the secrets their Authorization headers name are kept, which hosts they
    may call, and how much of a tool's result the model gets to read."""

    secrets_dir: Path | None = Field(
        default=None,
        description="A folder per tenant holding a file per secret: `<dir>/<tenant>/<auth_secret>`; "
        "empty: `secrets` in the state dir.",
    )
    max_result_chars: int = Field(default=16_000, gt=0, description="Longer results are cut to this.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts HTTP tools may call (`api.example.com`, or `*.example.com` for its subdomains); "
        "empty: any name. Whatever the name, internal addresses stay refused unless LCP_EGRESS__ALLOW "
        "opens them.",
    )


class EgressSettings(BaseModel):
    """Where calls made on a tenant's behalf (HTTP tools, chaos HTTP probes) may connect: public addresses,
    and what `allow` opens. Checked by the address a name resolves to, when connecting."""

    allow: list[str] = Field(
        default_factory=list,
        description="Opens non-public destinations (loopback, private, link-local, ...), which are refused "
        "otherwise: host names (`metrics.internal`, `*.svc.cluster.local`, which open whatever they resolve "
        "to), addresses (`10.0.0.7`, `[fd00::7]`) or networks (`10.20.0.0/16`), each with an optional "
        "`:port` (`127.0.0.1:8601`). JSON list.",
    )
    probe_allow: list[str] = Field(
        default_factory=list,
        description="Also opened, for chaos HTTP probes only (a platform operator's, GET or HEAD): entries "
        "as in `allow`. Tenants' tools never reach what only this opens (lcp dev opens the lab workload "
        "here, whose admin routes inject faults). JSON list.",
    )


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
    oidc: OidcSettings = OidcSettings()
    auth: AuthSettings = AuthSettings()
    metrics: MetricsSettings = MetricsSettings()
    limits: LimitSettings = LimitSettings()
    rollout: RolloutSettings = RolloutSettings()
    scaling: ScalingSettings = ScalingSettings()
    chaos: ChaosSettings = ChaosSettings()
    tools: ToolSettings = ToolSettings()
    egress: EgressSettings = EgressSettings()

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

    def resolved_kubeconfig(self) -> Path:
        return self.rollout.kubeconfig or self.home / "kubeconfig"

    def resolved_secrets_dir(self) -> Path:
        return self.tools.secrets_dir or self.home / "secrets"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.home / 'lcp.db').resolve()}"
