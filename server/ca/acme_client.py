"""Server layer: the ACME (RFC 8555) calls certgraph makes, over the `acme` library and josepy.

The library is synchronous (requests); each call runs in a worker thread, one at a time per
process, since its nonce pool and HTTP session are not meant for concurrent use. Failures come
out as two exceptions:

    CaUnavailable   (domain.ca) the server could not be reached, or asked us to come back later
    AcmeProblem     the server refused the request with an RFC 8555 problem document
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
from acme import challenges, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from domain.ca import CaUnavailable
from domain.model import DnsRecord
from server.ca.x509 import new_private_key_pem

log = logging.getLogger(__name__)
T = TypeVar("T")
USER_AGENT = "certgraph"
# Problems worth retrying later, not refusals (RFC 8555 section 6.7).
TRANSIENT = frozenset({"rateLimited", "serverInternal", "badNonce"})
# The RFC 5280 reason code sent with revokeCert: 0, unspecified (the user's reason is free text).
UNSPECIFIED = 0


class AcmeProblem(Exception):
    """The ACME server refused a request; `code` is the problem type without its URN prefix."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class AcmeAccount:
    directory_url: str
    # A PEM private key (EC P-256 or RSA); made with mode 0600 on first use when missing.
    key_file: Path
    contact_email: str | None = None
    # Trust for the directory's TLS certificate; None trusts the system's CAs.
    ca_bundle: Path | None = None
    timeout_seconds: int = 30


@dataclass(frozen=True, slots=True)
class AuthorizationView:
    url: str
    status: str
    domain: str
    # The dns-01 challenge: where to post the answer, and the TXT record it checks.
    challenge_url: str | None
    challenge_status: str | None
    record: DnsRecord | None
    error: str | None


@dataclass(frozen=True, slots=True)
class OrderView:
    status: str
    certificate_url: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class NewOrder:
    url: str
    finalize_url: str
    authorizations: tuple[AuthorizationView, ...]


def load_or_create_key(path: Path) -> JWK:
    """The account key in `path`, made (EC P-256) and written owner-only if there is none."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(new_private_key_pem())
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return JWKEC(key=key)
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key)
    raise ValueError(f"{path}: an ACME account key must be an EC or RSA private key")


def _signing_algorithm(key: JWK) -> JWASignature:
    return ES256 if isinstance(key, JWKEC) else RS256


class AcmeClient:
    """One ACME account at one directory; connects and registers on first use."""

    def __init__(self, account: AcmeAccount) -> None:
        self._account = account
        self._lock = asyncio.Lock()
        # The connected client and the account key, once registered.
        self._session: tuple[acme_client.ClientV2, JWK] | None = None

    async def _call(self, work: Callable[[acme_client.ClientV2, JWK], T]) -> T:
        async with self._lock:
            try:
                if self._session is None:
                    self._session = await asyncio.to_thread(self._connect)
                client, key = self._session
                return await asyncio.to_thread(work, client, key)
            except requests.RequestException as error:
                raise CaUnavailable(f"The ACME server cannot be reached: {error}") from error
            except messages.Error as error:
                code = error.code or "unknown"
                if code in TRANSIENT:
                    raise CaUnavailable(f"The ACME server asks to retry: {error}") from error
                raise AcmeProblem(code, error.detail or str(error)) from error
            except acme_errors.Error as error:
                raise CaUnavailable(f"The ACME exchange failed: {error}") from error

    def _connect(self) -> tuple[acme_client.ClientV2, JWK]:
        account = self._account
        key = load_or_create_key(account.key_file)
        net = acme_client.ClientNetwork(
            key,
            alg=_signing_algorithm(key),
            user_agent=USER_AGENT,
            timeout=account.timeout_seconds,
        )
        if account.ca_bundle is not None:
            # requests takes a CA bundle path here, where the acme annotation says bool.
            net.verify_ssl = str(account.ca_bundle)  # type: ignore[assignment]
        directory = acme_client.ClientV2.get_directory(account.directory_url, net)
        client = acme_client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=account.contact_email, terms_of_service_agreed=True
        )
        try:
            regr = client.new_account(registration)
            log.info("ACME account registered: %s", regr.uri)
        except acme_errors.ConflictError as existing:
            # The key already has an account (RFC 8555 section 7.3.1): use it.
            net.account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
        return client, key

    # ---- the calls

    async def new_order(self, csr_pem: str) -> NewOrder:
        def work(client: acme_client.ClientV2, key: JWK) -> NewOrder:
            order = client.new_order(csr_pem.encode())
            return NewOrder(
                url=order.uri,
                finalize_url=order.body.finalize,
                authorizations=tuple(
                    _authorization_view(a.uri, a.body, key) for a in order.authorizations
                ),
            )

        return await self._call(work)

    async def order(self, url: str) -> OrderView:
        def work(client: acme_client.ClientV2, _: JWK) -> OrderView:
            body = messages.Order.from_json(_fetch(client, url).json())
            return OrderView(
                status=str(body.status.name),
                certificate_url=body.certificate,
                error=body.error.detail if body.error else None,
            )

        return await self._call(work)

    async def authorizations(self, urls: tuple[str, ...]) -> tuple[AuthorizationView, ...]:
        def work(client: acme_client.ClientV2, key: JWK) -> tuple[AuthorizationView, ...]:
            return tuple(_authorization(client, url, key) for url in urls)

        return await self._call(work)

    async def answer_challenges(self, urls: tuple[str, ...]) -> None:
        """Tell the server to check the dns-01 challenge of every pending authorization."""

        def work(client: acme_client.ClientV2, key: JWK) -> None:
            for url in urls:
                body = messages.Authorization.from_json(_fetch(client, url).json())
                if body.status != messages.STATUS_PENDING:
                    continue
                for challenge in body.challenges:
                    if (
                        isinstance(challenge.chall, challenges.DNS01)
                        and challenge.status == messages.STATUS_PENDING
                    ):
                        client.answer_challenge(challenge, challenge.chall.response(key))

        await self._call(work)

    async def deactivate(self, urls: tuple[str, ...]) -> None:
        """Deactivate every pending or valid authorization (RFC 8555 section 7.5.2)."""

        def work(client: acme_client.ClientV2, _: JWK) -> None:
            for url in urls:
                body = messages.Authorization.from_json(_fetch(client, url).json())
                if body.status in (messages.STATUS_PENDING, messages.STATUS_VALID):
                    client.deactivate_authorization(
                        messages.AuthorizationResource(uri=url, body=body)
                    )

        await self._call(work)

    async def finalize(self, url: str, finalize_url: str, csr_pem: str) -> None:
        def work(client: acme_client.ClientV2, _: JWK) -> None:
            client.begin_finalization(
                messages.OrderResource(
                    uri=url,
                    body=messages.Order(finalize=finalize_url),
                    csr_pem=csr_pem.encode(),
                )
            )

        await self._call(work)

    async def download(self, certificate_url: str) -> str:
        def work(client: acme_client.ClientV2, _: JWK) -> str:
            return _fetch(client, certificate_url).text

        return await self._call(work)

    async def revoke(self, chain_pem: str) -> None:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        await self._call(lambda client, _: client.revoke(leaf, UNSPECIFIED))


def _fetch(client: acme_client.ClientV2, url: str) -> requests.Response:
    """POST-as-GET (RFC 8555 section 6.3): every read of a resource is a signed empty POST."""
    return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])


def _authorization(client: acme_client.ClientV2, url: str, key: JWK) -> AuthorizationView:
    return _authorization_view(
        url, messages.Authorization.from_json(_fetch(client, url).json()), key
    )


def _authorization_view(url: str, body: messages.Authorization, key: JWK) -> AuthorizationView:
    domain = body.identifier.value
    for challenge in body.challenges:
        if isinstance(challenge.chall, challenges.DNS01):
            record = DnsRecord(
                name=challenge.chall.validation_domain_name(domain),
                type="TXT",
                value=challenge.chall.validation(key),
            )
            return AuthorizationView(
                url=url,
                status=str(body.status.name),
                domain=domain,
                challenge_url=challenge.uri,
                challenge_status=str(challenge.status.name),
                record=record,
                error=challenge.error.detail if challenge.error else None,
            )
    return AuthorizationView(url, str(body.status.name), domain, None, None, None, None)
