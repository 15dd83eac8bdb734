"""Domain layer: the certificate service, every use case of the lifecycle in one object.

Each use case lives in a module of its own and follows the one shape of a change described in
`domain.use_case`: `domain.commands` (create, apply, verify the domain, add domains, revoke,
delete), `domain.withdrawal` (withdraw, under an idempotency key) and `domain.ca_sync` (the
worker's: the CA's decisions and expiry). The sandbox's controls are apart, in
`domain.sandbox`: a production service has none.
"""

from __future__ import annotations

from domain.ca_sync import CaSync
from domain.commands import CertificateCommands
from domain.withdrawal import Withdrawals


class CertificateService(CertificateCommands, Withdrawals, CaSync):
    """Built once per process over the ports (unit of work, CA, clock, change publisher)."""
