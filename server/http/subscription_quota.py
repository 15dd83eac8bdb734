"""Server layer: caps on WebSocket connections and operations, per process and per tenant.

Every operation a socket runs counts while it runs (subscriptions for as long as they are
subscribed; a query or mutation sent over the socket until it answers). The per-tenant count
spans every connection of this process. A refusal is a GraphQL error on that operation with
the code TOO_MANY_SUBSCRIPTIONS; the socket stays open.

Every socket counts toward the process's cap from its upgrade request to its end, initialised
or not (`connection_init`'s timeout bounds how long an anonymous one lasts); once initialised
it counts for its tenant too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from graphql import GraphQLError

from domain.model import TenantId

TOO_MANY_SUBSCRIPTIONS: Final = "TOO_MANY_SUBSCRIPTIONS"


@dataclass
class SubscriptionQuota:
    per_connection: int
    per_tenant: int
    _counts: dict[TenantId, int] = field(default_factory=dict)

    def admit(self, tenant_id: TenantId, on_this_connection: int) -> GraphQLError | None:
        """Count one more operation for the tenant, or say why not (nothing is counted)."""
        if on_this_connection >= self.per_connection:
            return refusal(
                f"This connection already runs {self.per_connection} operations, the most "
                "one connection may; complete one first."
            )
        if self._counts.get(tenant_id, 0) >= self.per_tenant:
            return refusal(
                f"Your connections already run {self.per_tenant} operations, the most one "
                "tenant may; complete one first."
            )
        self._counts[tenant_id] = self._counts.get(tenant_id, 0) + 1
        return None

    def release(self, tenant_id: TenantId) -> None:
        remaining = self._counts.get(tenant_id, 0) - 1
        if remaining > 0:
            self._counts[tenant_id] = remaining
        else:
            self._counts.pop(tenant_id, None)

    def running(self, tenant_id: TenantId) -> int:
        return self._counts.get(tenant_id, 0)


def refusal(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": TOO_MANY_SUBSCRIPTIONS})


@dataclass
class ConnectionQuota:
    per_process: int
    per_tenant: int
    open_sockets: int = 0
    _tenants: dict[TenantId, int] = field(default_factory=dict)

    def open(self) -> bool:
        """Count one more socket of this process, or say no (nothing is counted)."""
        if self.open_sockets >= self.per_process:
            return False
        self.open_sockets += 1
        return True

    def admit(self, tenant_id: TenantId) -> bool:
        """Count an open socket for its tenant, or say no (nothing is counted)."""
        if self._tenants.get(tenant_id, 0) >= self.per_tenant:
            return False
        self._tenants[tenant_id] = self._tenants.get(tenant_id, 0) + 1
        return True

    def release(self, tenant_id: TenantId) -> None:
        remaining = self._tenants.get(tenant_id, 0) - 1
        if remaining > 0:
            self._tenants[tenant_id] = remaining
        else:
            self._tenants.pop(tenant_id, None)

    def close(self) -> None:
        self.open_sockets -= 1

    def connections(self, tenant_id: TenantId) -> int:
        return self._tenants.get(tenant_id, 0)
