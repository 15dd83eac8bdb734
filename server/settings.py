"""Server layer: the runtime settings, read from `CERTGRAPH_*` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    env: Literal["production", "development"] = "production"
    # None: follow `env`; an explicit value wins.
    graphiql: bool | None = None
    max_body_bytes: int = Field(default=1_048_576, gt=0)

    @property
    def graphiql_enabled(self) -> bool:
        if self.graphiql is not None:
            return self.graphiql
        return self.env == "development"

    @property
    def introspection_enabled(self) -> bool:
        return self.env == "development"
