"""Every mutation's outcomes through the schema, over a real SQLite file and the simulated CA."""

from __future__ import annotations

from typing import Any

import pytest

from resolvers.errors import input_path
from resolvers.ids import CERTIFICATE, WITHDRAWAL, to_global_id
from tests.resolvers.conftest import CREATE, Api

WITHDRAW = """
mutation Withdraw($input: WithdrawApplicationInput!) {
  withdrawApplication(input: $input) {
    __typename
    ... on Error { message code }
    ... on WithdrawApplicationSuccess {
      message
      certificate { id status availableActions lastWithdrawal { id status } }
      withdrawal {
        id status previousStatus failureReason requestedAt resolvedAt certificate { id }
      }
    }
    ... on CertificateNotFoundError { certificateId }
    ... on InvalidCertificateStateError { currentStatus allowedStatuses certificate { id } }
    ... on WithdrawalNotAllowedError { reason certificate { id status } }
    ... on CaAlreadyApprovedError {
      certificate { status issuedAt expiresAt lastWithdrawal { id status failureReason } }
      withdrawal { id status failureReason previousStatus resolvedAt }
    }
    ... on CaUnavailableError { retryAfterSeconds }
    ... on ValidationError { field }
  }
}
"""

CHANGE_FIELDS = """
    __typename
    ... on Error { message code }
    ... on CertificateChangeSuccess {
      certificate { id status version additionalDomains events { kind } }
    }
    ... on CertificateNotFoundError { certificateId }
    ... on InvalidCertificateStateError { currentStatus allowedStatuses }
    ... on ValidationError { field }
    ... on CaUnavailableError { retryAfterSeconds }
"""

VERIFY = f"""
mutation Verify($input: CertificateIdInput!) {{ verifyDomain(input: $input) {{ {CHANGE_FIELDS} }} }}
"""
ADD = f"""
mutation Add($input: AddDomainsInput!) {{ addDomains(input: $input) {{ {CHANGE_FIELDS} }} }}
"""
REVOKE = f"""
mutation Revoke($input: RevokeCertificateInput!) {{
  revokeCertificate(input: $input) {{ {CHANGE_FIELDS} }}
}}
"""
DELETE = f"""
mutation Delete($input: CertificateIdInput!) {{
  deleteCertificate(input: $input) {{ {CHANGE_FIELDS} }}
}}
"""
REACHABLE = """
mutation Reachable($reachable: Boolean!) {
  sandboxSetCaReachable(input: {reachable: $reachable}) { reachable }
}
"""

MALFORMED_IDS = ["not-an-id", "", to_global_id(WITHDRAWAL, "abc"), to_global_id(CERTIFICATE, "x!")]


async def withdraw(api: Api, certificate_id: str, key: str | None = None) -> dict[str, Any]:
    data = await api.data(
        WITHDRAW, {"input": {"certificateId": certificate_id, "idempotencyKey": key}}
    )
    result: dict[str, Any] = data["withdrawApplication"]
    return result


async def change(api: Api, mutation: str, field: str, **input: Any) -> dict[str, Any]:
    data = await api.data(mutation, {"input": input})
    result: dict[str, Any] = data[field]
    return result


# ---- createCertificate


async def test_a_created_certificate_awaits_its_application(api: Api) -> None:
    certificate_id = await api.create(name="shop")
    data = await api.data(
        """query($id: ID!) { certificate(id: $id) {
             name status statusLabel availableActions version domain additionalDomains
             domainValidation { method } organization { name } lastWithdrawal { id }
             events { kind fromStatus toStatus } } }""",
        {"id": certificate_id},
    )
    assert data["certificate"] == {
        "name": "shop",
        "status": "PENDING_APPLICATION",
        "statusLabel": "Pending application",
        "availableActions": ["APPLY", "DELETE"],
        "version": 1,
        "domain": None,
        "additionalDomains": [],
        "domainValidation": None,
        "organization": None,
        "lastWithdrawal": None,
        "events": [{"kind": "CREATED", "fromStatus": None, "toStatus": "PENDING_APPLICATION"}],
    }


async def test_creating_with_a_bad_quota_is_a_validation_error(api: Api) -> None:
    data = await api.data(
        CREATE,
        {
            "input": {
                "name": "web",
                "type": "DV",
                "domainType": "SINGLE",
                "brand": "DigiCert",
                "domainQuota": 3,
                "validityYears": 1,
            }
        },
    )
    result = data["createCertificate"]
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION"
    assert "quota" in result["message"]


# ---- applyForCertificate


async def test_applying_submits_the_order_and_shows_the_dns_records(api: Api) -> None:
    certificate_id = await api.create(name="web", type="OV")
    result = await api.apply(
        certificate_id, "Web.Example.COM.", organization={"name": "Acme", "country": "de"}
    )
    assert result["__typename"] == "ApplyForCertificateSuccess"
    data = await api.data(
        """query($id: ID!) { certificate(id: $id) {
             status domain domainValidation { method records { name type value } verifiedAt }
             organization { name country verifiedAt } } }""",
        {"id": certificate_id},
    )
    certificate = data["certificate"]
    assert certificate["status"] == "PENDING_DOMAIN_VERIFICATION"
    assert certificate["domain"] == "web.example.com"
    validation = certificate["domainValidation"]
    assert validation["method"] == "DNS" and validation["verifiedAt"] is None
    [record] = validation["records"]
    assert record["name"] == "_acme-challenge.web.example.com" and record["type"] == "TXT"
    assert certificate["organization"] == {"name": "Acme", "country": "DE", "verifiedAt": None}


@pytest.mark.parametrize("sent_id", MALFORMED_IDS)
async def test_applying_with_a_malformed_id_is_not_found_with_the_id_as_sent(
    api: Api, sent_id: str
) -> None:
    result = await api.apply(sent_id)
    assert result["__typename"] == "CertificateNotFoundError"
    assert result["certificateId"] == sent_id
    assert result["code"] == "CERTIFICATE_NOT_FOUND"


async def test_applying_twice_is_an_invalid_state(api: Api) -> None:
    certificate_id = await api.applied()
    result = await api.apply(certificate_id)
    assert result["__typename"] == "InvalidCertificateStateError"
    assert result["code"] == "INVALID_CERTIFICATE_STATE"
    assert result["currentStatus"] == "PENDING_DOMAIN_VERIFICATION"
    assert result["allowedStatuses"] == ["PENDING_APPLICATION", "REJECTED"]


@pytest.mark.parametrize(
    ("domain", "organization", "field"),
    [
        ("not a host", None, "input.domain"),
        ("*.example.com", None, "input.domain"),
        ("web.example.com", {"name": "Acme", "country": "XX"}, "input.organization.country"),
    ],
)
async def test_applying_with_bad_input_names_the_field(
    api: Api, domain: str, organization: dict[str, str] | None, field: str
) -> None:
    certificate_id = await api.create(type="OV")
    result = await api.apply(certificate_id, domain, organization=organization)
    assert result["__typename"] == "ValidationError"
    assert result["field"] == field


async def test_an_ov_application_without_organization_is_refused(api: Api) -> None:
    certificate_id = await api.create(type="OV")
    result = await api.apply(certificate_id)
    assert result["__typename"] == "ValidationError"
    assert result["field"] == "input.organization"


async def test_applying_while_the_ca_is_unreachable_changes_nothing(api: Api) -> None:
    certificate_id = await api.create()
    assert (await api.data(REACHABLE, {"reachable": False}))["sandboxSetCaReachable"] == {
        "reachable": False
    }
    result = await api.apply(certificate_id)
    assert result["__typename"] == "CaUnavailableError"
    assert result["code"] == "CA_UNAVAILABLE"
    assert result["retryAfterSeconds"] > 0
    assert await api.status(certificate_id) == "PENDING_APPLICATION"
    await api.data(REACHABLE, {"reachable": True})
    assert (await api.apply(certificate_id))["__typename"] == "ApplyForCertificateSuccess"


# ---- verifyDomain and addDomains


async def test_verifying_the_domain_records_an_event_without_a_status_change(api: Api) -> None:
    certificate_id = await api.applied()
    result = await change(api, VERIFY, "verifyDomain", certificateId=certificate_id)
    assert result["__typename"] == "CertificateChangeSuccess"
    certificate = result["certificate"]
    assert certificate["status"] == "PENDING_DOMAIN_VERIFICATION"
    assert certificate["version"] == 3
    assert [e["kind"] for e in certificate["events"]][-1] == "DOMAIN_VERIFICATION_REQUESTED"


async def test_verifying_before_applying_is_an_invalid_state(api: Api) -> None:
    certificate_id = await api.create()
    result = await change(api, VERIFY, "verifyDomain", certificateId=certificate_id)
    assert result["__typename"] == "InvalidCertificateStateError"
    assert result["allowedStatuses"] == ["PENDING_DOMAIN_VERIFICATION"]


async def test_adding_domains_puts_the_addition_under_review(api: Api) -> None:
    certificate_id = await api.applied(domain_type="MULTIPLE", quota=3)
    result = await change(
        api, ADD, "addDomains", certificateId=certificate_id, domains=["api.example.com"]
    )
    assert result["__typename"] == "CertificateChangeSuccess"
    assert result["certificate"]["status"] == "CA_VERIFYING_DOMAIN_ADDITION"
    await api.decide(certificate_id, "APPROVE")
    await api.wait_for_status(certificate_id, "PENDING_DOMAIN_VERIFICATION")
    data = await api.data(
        "query($id: ID!) { certificate(id: $id) { additionalDomains } }", {"id": certificate_id}
    )
    assert data["certificate"]["additionalDomains"] == ["api.example.com"]


async def test_adding_domains_to_a_single_certificate_is_a_validation_error(api: Api) -> None:
    certificate_id = await api.applied()
    result = await change(
        api, ADD, "addDomains", certificateId=certificate_id, domains=["api.example.com"]
    )
    assert result["__typename"] == "ValidationError"
    assert result["field"] == "input.domains"


# ---- withdrawApplication


async def test_a_withdrawal_is_submitted_and_the_ca_approves_it(api: Api) -> None:
    certificate_id = await api.applied()
    result = await withdraw(api, certificate_id)
    assert result["__typename"] == "WithdrawApplicationSuccess"
    assert result["message"] == "Request for canceling the application submitted successfully."
    certificate, withdrawal = result["certificate"], result["withdrawal"]
    assert certificate["status"] == "CA_VERIFYING_WITHDRAWAL"
    assert certificate["availableActions"] == []
    assert certificate["lastWithdrawal"] == {"id": withdrawal["id"], "status": "PENDING"}
    assert withdrawal["status"] == "PENDING"
    assert withdrawal["previousStatus"] == "PENDING_DOMAIN_VERIFICATION"
    assert withdrawal["failureReason"] is None and withdrawal["resolvedAt"] is None
    assert withdrawal["certificate"] == {"id": certificate_id}

    assert (await api.decide(certificate_id, "APPROVE"))["__typename"] == "SandboxCaDecideSuccess"
    await api.wait_for_status(certificate_id, "PENDING_APPLICATION")
    data = await api.data(
        """query($id: ID!) { certificate(id: $id) {
             domain domainValidation { method } organization { name }
             lastWithdrawal { id status resolvedAt } events { kind } } }""",
        {"id": certificate_id},
    )
    after = data["certificate"]
    assert after["domain"] == "web.example.com"
    assert after["domainValidation"] is None and after["organization"] is None
    assert after["lastWithdrawal"]["id"] == withdrawal["id"]
    assert after["lastWithdrawal"]["status"] == "SUCCEEDED"
    assert after["lastWithdrawal"]["resolvedAt"] is not None
    assert [e["kind"] for e in after["events"]][-2:] == [
        "WITHDRAWAL_REQUESTED",
        "WITHDRAWAL_SUCCEEDED",
    ]


async def test_a_rejected_withdrawal_returns_to_the_previous_status(api: Api) -> None:
    certificate_id = await api.applied()
    await withdraw(api, certificate_id)
    await api.decide(certificate_id, "REJECT")
    await api.wait_for_status(certificate_id, "PENDING_DOMAIN_VERIFICATION")
    data = await api.data(
        "query($id: ID!) { certificate(id: $id) { lastWithdrawal { status failureReason } } }",
        {"id": certificate_id},
    )
    assert data["certificate"]["lastWithdrawal"] == {
        "status": "FAILED",
        "failureReason": "CA_REJECTED",
    }


async def test_a_retry_with_the_same_key_gets_the_same_withdrawal(api: Api) -> None:
    certificate_id = await api.applied()
    first = await withdraw(api, certificate_id, key="retry-1")
    again = await withdraw(api, certificate_id, key="retry-1")
    assert again["__typename"] == "WithdrawApplicationSuccess"
    assert again["withdrawal"]["id"] == first["withdrawal"]["id"]
    other = await api.applied("other")
    reused = await withdraw(api, other, key="retry-1")
    assert reused["__typename"] == "ValidationError"
    assert reused["field"] == "input.idempotencyKey"


async def test_an_idempotency_key_over_128_characters_is_a_validation_error(api: Api) -> None:
    certificate_id = await api.applied()
    result = await withdraw(api, certificate_id, key="k" * 129)
    assert result["__typename"] == "ValidationError"
    assert result["field"] == "input.idempotencyKey"
    assert await api.status(certificate_id) == "PENDING_DOMAIN_VERIFICATION"


@pytest.mark.parametrize("sent_id", MALFORMED_IDS)
async def test_withdrawing_a_malformed_id_is_not_found(api: Api, sent_id: str) -> None:
    result = await withdraw(api, sent_id)
    assert result["__typename"] == "CertificateNotFoundError"
    assert result["certificateId"] == sent_id


async def test_withdrawing_before_applying_is_an_invalid_state(api: Api) -> None:
    certificate_id = await api.create()
    result = await withdraw(api, certificate_id)
    assert result["__typename"] == "InvalidCertificateStateError"
    assert result["currentStatus"] == "PENDING_APPLICATION"
    assert result["allowedStatuses"] == [
        "PENDING_DOMAIN_VERIFICATION",
        "PENDING_ORGANIZATION_VERIFICATION",
        "CA_VERIFYING_DOMAIN_ADDITION",
    ]
    assert result["certificate"] == {"id": certificate_id}


async def test_withdrawal_is_refused_once_deletion_is_requested(api: Api) -> None:
    certificate_id = await api.applied()
    deleted = await change(api, DELETE, "deleteCertificate", certificateId=certificate_id)
    assert deleted["certificate"]["status"] == "CA_VERIFYING_DELETION"
    result = await withdraw(api, certificate_id)
    assert result["__typename"] == "WithdrawalNotAllowedError"
    assert result["code"] == "WITHDRAWAL_NOT_ALLOWED"
    assert result["reason"] == "DELETION_REQUESTED"
    assert result["certificate"]["status"] == "CA_VERIFYING_DELETION"


async def test_withdrawal_is_refused_once_revocation_is_requested(api: Api) -> None:
    certificate_id = await api.issued()
    revoked = await change(api, REVOKE, "revokeCertificate", certificateId=certificate_id)
    assert revoked["certificate"]["status"] == "CA_VERIFYING_REVOCATION"
    result = await withdraw(api, certificate_id)
    assert result["__typename"] == "WithdrawalNotAllowedError"
    assert result["reason"] == "REVOCATION_REQUESTED"


async def test_withdrawing_what_the_ca_already_issued_fails_and_shows_in_the_list(
    still_api: Api,
) -> None:
    api = still_api  # no worker: the service has not learnt of the issue yet
    certificate_id = await api.applied()
    assert (await api.decide(certificate_id, "ISSUE"))["__typename"] == "SandboxCaDecideSuccess"
    assert await api.status(certificate_id) == "PENDING_DOMAIN_VERIFICATION"
    result = await withdraw(api, certificate_id)
    assert result["__typename"] == "CaAlreadyApprovedError"
    assert result["code"] == "CA_ALREADY_APPROVED"
    certificate, withdrawal = result["certificate"], result["withdrawal"]
    assert certificate["status"] == "ISSUED"
    assert certificate["issuedAt"] is not None and certificate["expiresAt"] is not None
    assert withdrawal["status"] == "FAILED"
    assert withdrawal["failureReason"] == "CA_ALREADY_APPROVED"
    assert withdrawal["previousStatus"] == "PENDING_DOMAIN_VERIFICATION"
    listed = await api.data(
        "{ certificates(first: 10) { nodes { id lastWithdrawal { id status failureReason } } } }"
    )
    [node] = listed["certificates"]["nodes"]
    assert node["lastWithdrawal"] == {
        "id": withdrawal["id"],
        "status": "FAILED",
        "failureReason": "CA_ALREADY_APPROVED",
    }


async def test_a_withdrawal_overtaken_by_the_issue_fails_later(api: Api) -> None:
    certificate_id = await api.applied()
    assert (await withdraw(api, certificate_id))["__typename"] == "WithdrawApplicationSuccess"
    await api.decide(certificate_id, "ISSUE")
    await api.wait_for_status(certificate_id, "ISSUED")
    data = await api.data(
        "query($id: ID!) { certificate(id: $id) { lastWithdrawal { status failureReason } } }",
        {"id": certificate_id},
    )
    assert data["certificate"]["lastWithdrawal"] == {
        "status": "FAILED",
        "failureReason": "CA_ALREADY_APPROVED",
    }


async def test_withdrawing_while_the_ca_is_unreachable_changes_nothing(api: Api) -> None:
    certificate_id = await api.applied()
    await api.data(REACHABLE, {"reachable": False})
    result = await withdraw(api, certificate_id)
    assert result["__typename"] == "CaUnavailableError"
    assert await api.status(certificate_id) == "PENDING_DOMAIN_VERIFICATION"


# ---- revokeCertificate and deleteCertificate


async def test_revoking_an_issued_certificate_ends_in_revoked(api: Api) -> None:
    certificate_id = await api.issued()
    result = await change(
        api, REVOKE, "revokeCertificate", certificateId=certificate_id, reason="key leaked"
    )
    assert result["__typename"] == "CertificateChangeSuccess"
    await api.decide(certificate_id, "APPROVE")
    await api.wait_for_status(certificate_id, "REVOKED")


async def test_revoking_an_unissued_certificate_is_an_invalid_state(api: Api) -> None:
    certificate_id = await api.applied()
    result = await change(api, REVOKE, "revokeCertificate", certificateId=certificate_id)
    assert result["__typename"] == "InvalidCertificateStateError"
    assert result["allowedStatuses"] == ["ISSUED"]


async def test_an_unapplied_certificate_is_deleted_at_once(api: Api) -> None:
    certificate_id = await api.create()
    result = await change(api, DELETE, "deleteCertificate", certificateId=certificate_id)
    assert result["__typename"] == "CertificateChangeSuccess"
    assert result["certificate"]["status"] == "DELETED"
    again = await change(api, DELETE, "deleteCertificate", certificateId=certificate_id)
    assert again["__typename"] == "InvalidCertificateStateError"
    assert again["currentStatus"] == "DELETED"


async def test_deleting_an_unknown_certificate_is_not_found(api: Api) -> None:
    unknown = to_global_id(CERTIFICATE, "0" * 32)
    result = await change(api, DELETE, "deleteCertificate", certificateId=unknown)
    assert result["__typename"] == "CertificateNotFoundError"
    assert result["certificateId"] == unknown


# ---- the sandbox


async def test_the_sandbox_refuses_a_decision_without_a_review(api: Api) -> None:
    certificate_id = await api.create()
    result = await api.decide(certificate_id, "APPROVE")
    assert result["__typename"] == "InvalidCertificateStateError"
    assert result["currentStatus"] == "PENDING_APPLICATION"
    assert "PENDING_APPLICATION" not in result["allowedStatuses"]


async def test_the_sandbox_cannot_issue_during_a_revocation(api: Api) -> None:
    certificate_id = await api.issued()
    await change(api, REVOKE, "revokeCertificate", certificateId=certificate_id)
    result = await api.decide(certificate_id, "ISSUE")
    assert result["__typename"] == "InvalidCertificateStateError"
    assert result["currentStatus"] == "CA_VERIFYING_REVOCATION"


@pytest.mark.parametrize("sent_id", MALFORMED_IDS)
async def test_the_sandbox_does_not_find_malformed_ids(api: Api, sent_id: str) -> None:
    result = await api.decide(sent_id, "APPROVE")
    assert result["__typename"] == "CertificateNotFoundError"
    assert result["certificateId"] == sent_id


async def test_a_dv_domain_check_approved_in_the_sandbox_issues_the_certificate(api: Api) -> None:
    certificate_id = await api.applied()
    await change(api, VERIFY, "verifyDomain", certificateId=certificate_id)
    await api.decide(certificate_id, "APPROVE")
    await api.wait_for_status(certificate_id, "ISSUED")


@pytest.mark.parametrize(
    ("domain_field", "api_path"),
    [
        ("idempotency_key", "input.idempotencyKey"),
        ("certificate_id", "input.certificateId"),
        ("validation_method", "input.validationMethod"),
        ("domains[2]", "input.domains[2]"),
        ("additional_domains[0]", "input.additionalDomains[0]"),
        ("organization.country", "input.organization.country"),
        ("input.domain", "input.domain"),
    ],
)
def test_a_domain_field_is_reported_at_its_path_in_the_mutation_input(
    domain_field: str, api_path: str
) -> None:
    assert input_path(domain_field) == api_path
