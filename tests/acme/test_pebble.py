"""certgraph with CERTGRAPH_CA=acme against a real Pebble: apply, verify, issue, withdraw,
revoke, add domains, delete; DV only."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from sqlalchemy import select

from domain.commands import Application
from domain.model import Certificate, CertificateEvent
from domain.results import (
    CaAlreadyApproved,
    CertificateChanged,
    InvalidInput,
    WithdrawalSubmitted,
)
from domain.statuses import (
    CertificateStatus,
    CertificateType,
    DomainType,
    EventKind,
    ValidationMethod,
    WithdrawalFailureReason,
    WithdrawalStatus,
)
from resolvers.ids import CERTIFICATE, to_global_id
from server.ca.acme import AcmeCa
from server.ca.acme_book import AcmeOrderBook, Phase
from server.ca.acme_client import AcmeAccount, AcmeClient, AcmeProblem
from server.container import Container
from server.migrate import upgrade
from server.persistence.mapping import event_from_row, events
from tests.acme.conftest import AcmeApi, Pebble, acme_settings, open_api

S = CertificateStatus

DOCUMENT = """
query Document($id: ID!) {
  certificate(id: $id) {
    status issuedAt expiresAt pem
    x509 { serialNumber issuer subject notBefore notAfter dnsNames sha256Fingerprint }
  }
}
"""


def new_domain() -> str:
    return f"{uuid.uuid4().hex[:12]}.example.com"


async def apply(
    api: AcmeApi,
    domain: str,
    *,
    more: tuple[str, ...] = (),
    domain_type: DomainType = DomainType.SINGLE,
) -> Certificate:
    service = api.container.service
    created = await service.create_certificate(
        api.tenant,
        name=domain,
        type=CertificateType.DV,
        domain_type=domain_type,
        brand="Pebble",
        domain_quota=3 if domain_type is DomainType.MULTIPLE else 1,
        validity_years=1,
    )
    assert isinstance(created, CertificateChanged)
    applied = await service.apply(
        api.tenant,
        created.certificate.id,
        Application(domain=domain, additional_domains=list(more), method=ValidationMethod.DNS),
    )
    assert isinstance(applied, CertificateChanged), applied
    assert applied.certificate.status is S.PENDING_DOMAIN_VERIFICATION
    return applied.certificate


async def verify(api: AcmeApi, certificate: Certificate) -> None:
    assert certificate.domain_validation is not None
    api.pebble.publish(certificate.domain_validation.records)
    verified = await api.container.service.verify_domain(api.tenant, certificate.id)
    assert isinstance(verified, CertificateChanged), verified


async def issue(api: AcmeApi, domain: str) -> Certificate:
    certificate = await apply(api, domain)
    await verify(api, certificate)
    return await api.settle(certificate.id, S.ISSUED)


async def ca_decisions(api: AcmeApi, order_id: str, *, within: float = 30.0) -> list[str]:
    """The CA's decisions on the order, once it has made one: Pebble validates and issues in
    the background, so right after the domain check there may be none yet."""
    deadline = time.monotonic() + within
    while True:
        logged = await ca_of(api).decisions({order_id: 0})
        kinds = [decision.kind.value for decision in logged.get(order_id, ())]
        if kinds or time.monotonic() > deadline:
            return kinds
        await asyncio.sleep(0.05)


def ca_of(api: AcmeApi) -> AcmeCa:
    assert isinstance(api.container.ca, AcmeCa)
    return api.container.ca


def same_account(api: AcmeApi) -> AcmeClient:
    """Another client on the test's ACME account, to ask Pebble directly."""
    settings = api.container.settings
    assert settings.acme_directory_url and settings.acme_account_key_file
    return AcmeClient(
        AcmeAccount(
            settings.acme_directory_url,
            settings.acme_account_key_file,
            ca_bundle=settings.acme_ca_bundle,
        )
    )


def verified_chain(pem: str, root_pem: str, domain: str) -> list[x509.Certificate]:
    """Path validation as a TLS client does it: the chain, up to `root_pem`, for `domain`."""
    certificates = x509.load_pem_x509_certificates(pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(domain))
    return verifier.verify(certificates[0], certificates[1:])


async def test_apply_publishes_one_dns01_txt_record_per_domain(acme_api: AcmeApi) -> None:
    domain = new_domain()

    certificate = await apply(acme_api, domain)

    assert certificate.domain_validation is not None
    (record,) = certificate.domain_validation.records
    assert record.name == f"_acme-challenge.{domain}"
    assert record.type == "TXT"
    # base64url(SHA-256(key authorization)), unpadded (RFC 8555 section 8.4).
    assert len(record.value) == 43


async def test_apply_verify_issues_a_certificate_that_chains_to_pebbles_root(
    db_url: str, pebble: Pebble, tmp_path: Path
) -> None:
    api = await open_api(acme_settings(db_url, pebble, tmp_path / "account.pem"), pebble)
    try:
        domain = new_domain()

        issued = await issue(api, domain)

        data = await api.data(DOCUMENT, {"id": _global(issued.id)})
        shown = data["certificate"]
        assert shown["status"] == "ISSUED"
        chain = verified_chain(shown["pem"], pebble.root_pem(), domain)
        assert len(chain) == 3  # leaf, Pebble's intermediate, Pebble's root
        leaf = chain[0]
        facts = shown["x509"]
        assert facts["serialNumber"] == f"{leaf.serial_number:x}"
        assert facts["issuer"] == leaf.issuer.rfc4514_string()
        assert "Pebble Intermediate CA" in facts["issuer"]
        assert facts["dnsNames"] == [domain]
        assert facts["notBefore"] == leaf.not_valid_before_utc.isoformat()
        assert facts["notAfter"] == leaf.not_valid_after_utc.isoformat()
        # The lifetime is the CA's, not validityYears: issuedAt/expiresAt are the certificate's.
        assert shown["issuedAt"] == facts["notBefore"]
        assert shown["expiresAt"] == facts["notAfter"]
        assert "PRIVATE KEY" not in shown["pem"]
        assert [e.kind for e in await _events(api, issued.id)][-1] is EventKind.ISSUED
    finally:
        await api.container.close()


async def test_withdrawing_deactivates_the_authorizations_and_returns_to_pending_application(
    acme_api: AcmeApi,
) -> None:
    certificate = await apply(acme_api, new_domain())
    assert certificate.ca_order_id is not None
    order_id = certificate.ca_order_id

    submitted = await acme_api.container.service.withdraw(acme_api.tenant, certificate.id)

    assert isinstance(submitted, WithdrawalSubmitted), submitted
    assert submitted.certificate.status is S.CA_VERIFYING_WITHDRAWAL
    after = await acme_api.settle(certificate.id, S.PENDING_APPLICATION)
    assert after.last_withdrawal is not None
    assert after.last_withdrawal.status is WithdrawalStatus.SUCCEEDED
    assert after.domain_validation is None and after.ca_order_id is None
    order = await AcmeOrderBook(acme_api.container.db).get(order_id)
    assert order is not None and order.phase is Phase.CLOSED
    authorizations = await same_account(acme_api).authorizations(order.authorizations)
    assert {a.status for a in authorizations} == {"deactivated"}


async def test_withdrawing_after_the_ca_issued_answers_ca_already_approved(
    acme_api: AcmeApi,
) -> None:
    certificate = await apply(acme_api, new_domain())
    await verify(acme_api, certificate)
    assert certificate.ca_order_id is not None
    # The CA issues before the service hears of it (the worker has not applied the decision).
    assert await ca_decisions(acme_api, certificate.ca_order_id) == ["ISSUED"]

    refused = await acme_api.container.service.withdraw(acme_api.tenant, certificate.id)

    assert isinstance(refused, CaAlreadyApproved), refused
    assert refused.certificate.status is S.ISSUED
    assert refused.withdrawal.status is WithdrawalStatus.FAILED
    assert refused.withdrawal.failure_reason is WithdrawalFailureReason.CA_ALREADY_APPROVED
    stored = await acme_api.load(certificate.id)
    assert stored.status is S.ISSUED and stored.last_withdrawal == refused.withdrawal
    data = await acme_api.data(DOCUMENT, {"id": _global(certificate.id)})
    verified_chain(data["certificate"]["pem"], acme_api.pebble.root_pem(), certificate.domain or "")


async def test_withdrawing_while_the_ca_is_issuing_waits_and_answers_ca_already_approved(
    acme_api: AcmeApi,
) -> None:
    certificate = await apply(acme_api, new_domain())
    await verify(acme_api, certificate)
    assert certificate.ca_order_id is not None
    book = AcmeOrderBook(acme_api.container.db)
    order = await book.get(certificate.ca_order_id)
    assert order is not None
    # As a process that died right after deciding to finalize leaves it: the order is ready at
    # Pebble and certgraph has committed to finalizing it.
    finalizing = replace(order, phase=Phase.FINALIZING)
    assert await book.save(finalizing, was=order, now=datetime.now(UTC))

    refused = await acme_api.container.service.withdraw(acme_api.tenant, certificate.id)

    assert isinstance(refused, CaAlreadyApproved), refused
    assert refused.certificate.status is S.ISSUED
    after = await book.get(certificate.ca_order_id)
    assert after is not None and after.phase is Phase.ISSUED


async def test_withdrawing_a_validated_but_unfinalized_order_still_succeeds(
    acme_api: AcmeApi,
) -> None:
    certificate = await apply(acme_api, new_domain())
    await verify(acme_api, certificate)
    assert certificate.ca_order_id is not None
    order = await AcmeOrderBook(acme_api.container.db).get(certificate.ca_order_id)
    assert order is not None
    assert (await same_account(acme_api).order(order.url)).status == "ready"

    submitted = await acme_api.container.service.withdraw(acme_api.tenant, certificate.id)

    assert isinstance(submitted, WithdrawalSubmitted), submitted
    await acme_api.settle(certificate.id, S.PENDING_APPLICATION)
    assert (await same_account(acme_api).order(order.url)).status in ("invalid", "deactivated")


async def test_revoking_revokes_the_certificate_at_the_ca(acme_api: AcmeApi) -> None:
    issued = await issue(acme_api, new_domain())

    requested = await acme_api.container.service.revoke(acme_api.tenant, issued.id, "key lost")

    assert isinstance(requested, CertificateChanged), requested
    assert requested.certificate.status is S.CA_VERIFYING_REVOCATION
    await acme_api.settle(issued.id, S.REVOKED)
    data = await acme_api.data(DOCUMENT, {"id": _global(issued.id)})
    with pytest.raises(AcmeProblem) as again:
        await same_account(acme_api).revoke(data["certificate"]["pem"])
    assert again.value.code == "alreadyRevoked"


async def test_a_dns_check_that_finds_no_record_rejects_the_application(
    acme_api: AcmeApi,
) -> None:
    certificate = await apply(acme_api, new_domain())

    # Verify without publishing the TXT record.
    verified = await acme_api.container.service.verify_domain(acme_api.tenant, certificate.id)

    assert isinstance(verified, CertificateChanged)
    rejected = await acme_api.settle(certificate.id, S.REJECTED)
    message = (await _events(acme_api, rejected.id))[-1].message or ""
    assert certificate.domain in message
    assert "TXT" in message


async def test_adding_domains_orders_anew_for_all_of_them(acme_api: AcmeApi) -> None:
    first, second = new_domain(), new_domain()
    certificate = await apply(acme_api, first, domain_type=DomainType.MULTIPLE)

    added = await acme_api.container.service.add_domains(acme_api.tenant, certificate.id, [second])

    assert isinstance(added, CertificateChanged), added
    ready = await acme_api.settle(certificate.id, S.PENDING_DOMAIN_VERIFICATION)
    assert ready.domains == (first, second)
    assert ready.domain_validation is not None
    assert {r.name for r in ready.domain_validation.records} == {
        f"_acme-challenge.{first}",
        f"_acme-challenge.{second}",
    }
    await verify(acme_api, ready)
    issued = await acme_api.settle(certificate.id, S.ISSUED)
    data = await acme_api.data(DOCUMENT, {"id": _global(issued.id)})
    assert sorted(data["certificate"]["x509"]["dnsNames"]) == sorted([first, second])


async def test_deleting_an_application_closes_its_order(acme_api: AcmeApi) -> None:
    certificate = await apply(acme_api, new_domain())

    deleted = await acme_api.container.service.delete(acme_api.tenant, certificate.id)

    assert isinstance(deleted, CertificateChanged), deleted
    assert deleted.certificate.status is S.CA_VERIFYING_DELETION
    await acme_api.settle(certificate.id, S.DELETED)


async def test_ov_and_ev_are_refused_as_input_because_acme_issues_dv_only(
    acme_api: AcmeApi,
) -> None:
    for kind in (CertificateType.OV, CertificateType.EV):
        refused = await acme_api.container.service.create_certificate(
            acme_api.tenant,
            name="org",
            type=kind,
            domain_type=DomainType.SINGLE,
            brand="Pebble",
            domain_quota=1,
            validity_years=1,
        )

        assert isinstance(refused, InvalidInput)
        assert refused.field == "type"
        assert "ACME issues DV certificates only" in refused.message


async def test_applying_for_an_ov_certificate_made_earlier_is_refused_before_any_order(
    acme_api: AcmeApi,
) -> None:
    # Made while the simulated CA was configured, on the same database.
    settings = acme_api.container.settings.model_copy(update={"ca": "simulated"})
    simulated = Container(settings, run_background=False)
    try:
        created = await simulated.service.create_certificate(
            acme_api.tenant,
            name="org",
            type=CertificateType.OV,
            domain_type=DomainType.SINGLE,
            brand="Pebble",
            domain_quota=1,
            validity_years=1,
        )
    finally:
        await simulated.close()
    assert isinstance(created, CertificateChanged)

    refused = await acme_api.container.service.apply(
        acme_api.tenant,
        created.certificate.id,
        Application(
            domain=new_domain(),
            additional_domains=[],
            method=ValidationMethod.DNS,
            organization_name="Acme",
            organization_country="DE",
        ),
    )

    assert isinstance(refused, InvalidInput)
    assert refused.field == "certificate_id"
    assert "ACME issues DV certificates only" in refused.message
    assert (await acme_api.load(created.certificate.id)).status is S.PENDING_APPLICATION


async def test_http_validation_is_refused_as_input(acme_api: AcmeApi) -> None:
    created = await acme_api.container.service.create_certificate(
        acme_api.tenant,
        name="web",
        type=CertificateType.DV,
        domain_type=DomainType.SINGLE,
        brand="Pebble",
        domain_quota=1,
        validity_years=1,
    )
    assert isinstance(created, CertificateChanged)

    refused = await acme_api.container.service.apply(
        acme_api.tenant,
        created.certificate.id,
        Application(domain=new_domain(), additional_domains=[], method=ValidationMethod.HTTP),
    )

    assert isinstance(refused, InvalidInput)
    assert refused.field == "validation_method"


async def test_the_decision_log_keeps_its_sequence_numbers_after_a_restart(
    sqlite_url: str, pebble: Pebble, tmp_path: Path
) -> None:
    await upgrade(sqlite_url)
    settings = acme_settings(sqlite_url, pebble, tmp_path / "account.pem")
    first = await open_api(settings, pebble)
    try:
        issued = await issue(first, new_domain())
    finally:
        await first.container.close()
    assert issued.ca_order_id is not None

    again = await open_api(settings, pebble)
    try:
        logged = await ca_of(again).decisions({issued.ca_order_id: 0})
    finally:
        await again.container.close()

    assert [(d.seq, d.kind.value) for d in logged[issued.ca_order_id]] == [(1, "ISSUED")]
    assert logged[issued.ca_order_id][0].document is not None


def _global(certificate_id: str) -> str:
    return to_global_id(CERTIFICATE, certificate_id)


async def _events(api: AcmeApi, certificate_id: str) -> list[CertificateEvent]:
    async with api.container.db.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(events)
                .where(events.c.certificate_id == certificate_id)
                .order_by(events.c.version)
            )
        ).mappings()
        return [event_from_row(row) for row in rows]
