"""Server layer: who is calling: bearer tokens to tenants (or everyone `dev` with auth off)."""

from __future__ import annotations

from dataclasses import dataclass

from resolvers.context import Caller
from server.persistence.tenants import TenantStore

DEV_TENANT = "dev"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented: nothing, or a bearer token (possibly malformed)."""

    token: str | None
    presented: bool


def bearer(authorization: object) -> Credentials:
    if not isinstance(authorization, str) or not authorization.strip():
        return Credentials(None, presented=False)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Credentials(None, presented=True)
    return Credentials(token.strip(), presented=True)


class Authenticator:
    """Bearer token -> caller; with `auth = off`, everyone is tenant `dev`."""

    def __init__(self, tenants: TenantStore, *, auth_off: bool) -> None:
        self._tenants = tenants
        self._auth_off = auth_off
        self._dev: Caller | None = None

    async def caller(self, credentials: Credentials) -> Caller | None:
        if self._auth_off:
            if self._dev is None:
                dev = await self._tenants.ensure_tenant(DEV_TENANT)
                self._dev = Caller(dev.id, dev.name)
            return self._dev
        if credentials.token is None:
            return None
        tenant = await self._tenants.tenant_for_token(credentials.token)
        return None if tenant is None else Caller(tenant.id, tenant.name)
