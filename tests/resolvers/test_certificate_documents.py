"""Issued certificates to download: `Certificate.pem` and `Certificate.x509`, from the simulated
CA's real X.509 certificates, signed by its own test root."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from domain.model import add_years
from resolvers.ids import CERTIFICATE, local_id
from server.ca.simulated import SimulatedCa
from server.ca.sql_book import SqlOrderBook
from server.clock import SystemClock
from tests.resolvers.conftest import Api

DOCUMENT = """
query Document($id: ID!) {
  certificate(id: $id) {
    status issuedAt expiresAt pem
    x509 { serialNumber issuer subject notBefore notAfter dnsNames sha256Fingerprint }
  }
}
"""

WITHDRAW = """
mutation Withdraw($id: ID!) {
  withdrawApplication(input: {certificateId: $id}) {
    __typename
    ... on CaAlreadyApprovedError { certificate { status pem x509 { serialNumber } } }
  }
}
"""


def sim_ca(api: Api) -> SimulatedCa:
    assert api.container.sim_ca is not None
    return api.container.sim_ca


async def test_an_issued_certificate_has_a_pem_chain_to_the_simulated_root(api: Api) -> None:
    certificate_id = await api.issued("web")

    shown = (await api.data(DOCUMENT, {"id": certificate_id}))["certificate"]

    certificates = x509.load_pem_x509_certificates(shown["pem"].encode())
    root = x509.load_pem_x509_certificate((await sim_ca(api).root_pem()).encode())
    verifier = (
        PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName("web.example.com"))
    )
    chain = verifier.verify(certificates[0], certificates[1:])
    leaf = chain[0]
    facts = shown["x509"]
    assert facts["serialNumber"] == f"{leaf.serial_number:x}"
    assert facts["issuer"] == "CN=certgraph simulated CA root,O=certgraph"
    assert facts["subject"] == "CN=web.example.com"
    assert facts["dnsNames"] == ["web.example.com"]
    assert len(facts["sha256Fingerprint"]) == 64
    assert shown["issuedAt"] == facts["notBefore"] == leaf.not_valid_before_utc.isoformat()
    assert shown["expiresAt"] == facts["notAfter"] == leaf.not_valid_after_utc.isoformat()
    # validityYears asked for one year; the simulated CA grants what was asked.
    assert leaf.not_valid_after_utc == add_years(leaf.not_valid_before_utc, 1)
    assert "PRIVATE KEY" not in shown["pem"]


async def test_no_document_before_issue(api: Api) -> None:
    certificate_id = await api.applied("web")

    shown = (await api.data(DOCUMENT, {"id": certificate_id}))["certificate"]

    assert shown["pem"] is None and shown["x509"] is None


async def test_another_tenant_cannot_read_the_document(api: Api) -> None:
    certificate_id = await api.issued("web")

    shown = (await api.data(DOCUMENT, {"id": certificate_id}, caller=api.globex))["certificate"]

    assert shown is None
    own_id = local_id(certificate_id, CERTIFICATE)
    assert own_id is not None
    reader = api.context().services.reader
    assert await reader.documents(api.globex.tenant_id, [own_id]) == {}
    assert own_id in await reader.documents(api.acme.tenant_id, [own_id])


async def test_a_withdrawal_the_ca_had_approved_answers_with_the_issued_certificate(
    still_api: Api,
) -> None:
    certificate_id = await still_api.applied("web")
    assert (await still_api.decide(certificate_id, "ISSUE"))["__typename"] == (
        "SandboxCaDecideSuccess"
    )

    result = (await still_api.data(WITHDRAW, {"id": certificate_id}))["withdrawApplication"]

    assert result["__typename"] == "CaAlreadyApprovedError"
    assert result["certificate"]["status"] == "ISSUED"
    assert result["certificate"]["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert result["certificate"]["x509"]["serialNumber"]


async def test_the_test_root_is_made_once_and_shared(api: Api) -> None:
    first = await sim_ca(api).root_pem()

    again = SimulatedCa(SqlOrderBook(api.container.db), SystemClock().now)

    assert await again.root_pem() == first
