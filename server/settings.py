"""Server layer: the runtime settings, read from `CERTGRAPH_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.persistence.time_limits import DEFAULT_STATEMENT_TIMEOUT_SECONDS, DatabaseLimits

_DB = DatabaseLimits()


class Settings(BaseSettings):
    """Everything configurable about one certgraph process (SPEC section 5).

    Built explicitly by the composition root or the CLI, never at import time.
    """

    model_config = SettingsConfigDict(env_prefix="CERTGRAPH_", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./certgraph.db"
    auth: Literal["token", "off"] = "token"
    sandbox: bool = False
    ca: Literal["simulated", "acme"] = "simulated"
    # 0: the simulated CA decides only when told through the sandbox mutation.
    ca_auto_decide_seconds: float = Field(default=0, ge=0)
    ca_poll_seconds: float = Field(default=2.0, gt=0)
    # 0: this process serves the API but leaves polling the CA to the other processes.
    worker: bool = True
    # CERTGRAPH_CA=acme (README "A real CA over ACME"): the directory, the account key file
    # (made on first use when missing), a contact, and trust for the directory's TLS.
    acme_directory_url: str | None = None
    acme_account_key_file: Path | None = None
    acme_contact_email: str | None = None
    acme_ca_bundle: Path | None = None
    # Registering an account accepts the CA's terms of service: the operator says so.
    acme_agree_terms: bool = False
    env: Literal["production", "development"] = "production"
    # None: follow `env`; an explicit value wins.
    graphiql: bool | None = None
    # 0: every field goes graphql-core's regular way instead of the plain-field fast path
    # (graphql_engine.execution); the same answers (tests/resolvers/test_executor_parity.py).
    fast_executor: bool = True
    # A full collection and free memory handed back to the system this often (server.heap);
    # 0: never (the collector and malloc decide).
    heap_trim_seconds: float = Field(default=30.0, ge=0)
    # Also the largest WebSocket message.
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    # The largest GraphQL document (UTF-8), refused before it is lexed: the token limit does not
    # count comments, whitespace or commas. At 32 KiB the slowest to lex (a block string) took
    # ~12 ms, one long comment ~5 ms; the console's documents and introspection are under 2 KiB.
    max_document_bytes: int = Field(default=32_768, gt=0)
    # A request's head (request line and headers): its size, and how long it may take to arrive.
    max_header_bytes: int = Field(default=65_536, gt=0)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Database time limits (README "Security"); passing one answers SERVICE_UNAVAILABLE.
    statement_timeout_seconds: float = Field(default=DEFAULT_STATEMENT_TIMEOUT_SECONDS, gt=0)
    write_deadline_seconds: float = Field(default=_DB.write_deadline_seconds, gt=0)
    # SQLite: reads by key at once on the event loop (the fast path); 0 sends every read to the
    # reader threads.
    sqlite_key_reads_on_loop: bool = _DB.key_reads_on_loop
    # SQLite: answer searches from the trigram (FTS5) index where that is cheaper; 0: always read
    # the tenant's rows in order (the index is kept up to date either way).
    search_index: bool = True

    # Query limits (README "Security"): each refusal is a GraphQL error with a stable code.
    max_depth: int = Field(default=10, gt=0)
    max_aliases: int = Field(default=15, ge=0)
    max_tokens: int = Field(default=2_000, gt=0)
    # Every field costs 1; `first`/`last` multiply the lists of the page they ask for.
    max_cost: int = Field(default=10_000, gt=0)
    max_directives: int = Field(default=50, ge=0)
    # Comparisons of same-named fields (and of fragments spread together) validation may make.
    max_field_comparisons: int = Field(default=2_500, gt=0)
    # Browser origins allowed to call the API (CORS) and to open WebSockets; empty: none.
    # Comma-separated in the environment: CERTGRAPH_CORS_ORIGINS=https://a.example,https://b.example
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    ws_init_timeout_seconds: float = Field(default=10.0, gt=0)
    max_subscriptions_per_connection: int = Field(default=20, gt=0)
    max_subscriptions_per_tenant: int = Field(default=200, gt=0)
    # Open WebSockets: per process (initialised or not), and per tenant once initialised.
    max_ws_connections: int = Field(default=2_000, gt=0)
    max_ws_connections_per_tenant: int = Field(default=100, gt=0)
    # Token bucket per tenant: a sustained rate (0 turns limiting off) and a burst.
    rate_limit_per_second: float = Field(default=20.0, ge=0)
    rate_limit_burst: int = Field(default=100, gt=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        return value

    @property
    def database_limits(self) -> DatabaseLimits:
        return DatabaseLimits(
            statement_timeout_seconds=self.statement_timeout_seconds,
            write_deadline_seconds=self.write_deadline_seconds,
            key_reads_on_loop=self.sqlite_key_reads_on_loop,
        )

    @property
    def graphiql_enabled(self) -> bool:
        if self.graphiql is not None:
            return self.graphiql
        return self.env == "development"

    @property
    def introspection_enabled(self) -> bool:
        return self.env == "development"
