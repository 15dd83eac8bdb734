"""Fixtures for the ACME tests: a real Pebble and pebble-challtestsrv on loopback, and certgraph
configured for them (CERTGRAPH_CA=acme) over a fresh database.

Pebble serves its ACME API over TLS with a certificate made here; its DNS-01 checks ask
challtestsrv, whose management API publishes the TXT records the tests are told to publish.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domain.model import Certificate, CertificateId, DnsRecord, TenantId
from domain.statuses import CertificateStatus
from resolvers.context import Caller
from server.container import Container
from server.http.schema import build_schema
from server.migrate import upgrade
from server.settings import Settings
from tests.resolvers.conftest import Api
from tests.support import free_port, stop_process

START_SECONDS = 30.0
STOP_SECONDS = 10.0


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    # Trust for Pebble's listeners (the TLS certificate made for them).
    ca_bundle: Path
    management_url: str
    challtestsrv_url: str

    def publish(self, records: tuple[DnsRecord, ...] | list[DnsRecord]) -> None:
        """Make challtestsrv answer these TXT records (Pebble's DNS-01 checks ask it)."""
        for record in records:
            assert record.type == "TXT"
            response = httpx.post(
                f"{self.challtestsrv_url}/set-txt",
                json={"host": f"{record.name}.", "value": record.value},
                timeout=10,
            )
            response.raise_for_status()

    def root_pem(self) -> str:
        """Pebble's root, made anew at each start: what its certificates chain to."""
        trust = ssl.create_default_context(cafile=self.ca_bundle)
        response = httpx.get(f"{self.management_url}/roots/0", verify=trust)
        response.raise_for_status()
        return response.text


def _tls_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, for Pebble's own listeners."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls-cert.pem", directory / "tls-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not listen on {port} within {START_SECONDS} s"
                ) from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """Pebble and pebble-challtestsrv (Debian's `pebble` package), for the whole session."""
    for program in ("pebble", "pebble-challtestsrv"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is missing: apt-get install -y pebble (.ci/run does this)")
    directory = tmp_path_factory.mktemp("pebble")
    cert_path, key_path = _tls_certificate(directory)
    acme_port, management_port, dns_port, challtestsrv_port = (free_port() for _ in range(4))
    config = directory / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(cert_path),
                    "privateKey": str(key_path),
                    # For HTTP-01 and TLS-ALPN-01 checks, which these tests do not use.
                    "httpPort": free_port(),
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    challtestsrv_log = (directory / "challtestsrv.log").open("wb")
    pebble_log = (directory / "pebble.log").open("wb")
    challtestsrv = subprocess.Popen(
        [
            "pebble-challtestsrv",
            "-management",
            f"127.0.0.1:{challtestsrv_port}",
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
        ],
        stdout=challtestsrv_log,
        stderr=subprocess.STDOUT,
    )
    environment = {
        **os.environ,
        # Check at once; never reject a good nonce; a fresh authorization for every order.
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    server = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        cwd=directory,
        env=environment,
        stdout=pebble_log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(challtestsrv_port, challtestsrv, "pebble-challtestsrv")
        _wait_for_port(acme_port, server, "pebble")
        _wait_for_port(management_port, server, "pebble (management)")
        yield Pebble(
            directory_url=f"https://127.0.0.1:{acme_port}/dir",
            ca_bundle=cert_path,
            management_url=f"https://127.0.0.1:{management_port}",
            challtestsrv_url=f"http://127.0.0.1:{challtestsrv_port}",
        )
    finally:
        stop_process(server, timeout=STOP_SECONDS)
        stop_process(challtestsrv, timeout=STOP_SECONDS)
        pebble_log.close()
        challtestsrv_log.close()


def acme_settings(url: str, pebble: Pebble, key_file: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "ca": "acme",
        "acme_directory_url": pebble.directory_url,
        "acme_account_key_file": key_file,
        "acme_contact_email": "ops@example.com",
        "acme_ca_bundle": pebble.ca_bundle,
        "acme_agree_terms": True,
        "ca_poll_seconds": 0.05,
        "env": "development",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class AcmeApi(Api):
    """certgraph over Pebble: the service, the schema, and the worker run by hand."""

    pebble: Pebble
    tenant: TenantId

    async def load(self, certificate_id: str) -> Certificate:
        async with self.container.uow() as uow:
            found = await uow.certificates.get_any_tenant(CertificateId(certificate_id))
        assert found is not None
        return found

    async def settle(
        self, certificate_id: str, status: CertificateStatus, *, within: float = 30.0
    ) -> Certificate:
        """Run the worker until the certificate reaches `status` (the worker polls Pebble)."""
        deadline = time.monotonic() + within
        while True:
            await self.container.worker.run_once()
            certificate = await self.load(certificate_id)
            if certificate.status is status:
                return certificate
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"certificate still {certificate.status} after {within} s, not {status}"
                )
            await asyncio.sleep(0.05)


async def open_api(settings: Settings, pebble: Pebble) -> AcmeApi:
    container = Container(settings, run_background=False)
    tenant = await container.tenants.ensure_tenant("acme")
    other = await container.tenants.ensure_tenant("globex")
    return AcmeApi(
        container=container,
        schema=build_schema(sandbox=False),
        acme=Caller(tenant.id, tenant.name),
        globex=Caller(other.id, other.name),
        pebble=pebble,
        tenant=tenant.id,
    )


@pytest.fixture
async def acme_api(sqlite_url: str, pebble: Pebble, tmp_path: Path) -> AsyncIterator[AcmeApi]:
    """certgraph with CERTGRAPH_CA=acme over a migrated SQLite file; its own ACME account."""
    await upgrade(sqlite_url)
    api = await open_api(acme_settings(sqlite_url, pebble, tmp_path / "account.pem"), pebble)
    yield api
    await api.container.close()
