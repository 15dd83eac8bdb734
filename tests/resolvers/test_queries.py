"""Queries through the schema: ids and node, the viewer, events, and tenant isolation."""

from __future__ import annotations

import base64
import itertools

import pytest

from resolvers.ids import CERTIFICATE, TENANT, WITHDRAWAL, to_global_id
from tests.resolvers.conftest import Api

CERTIFICATE_QUERY = "query($id: ID!) { certificate(id: $id) { id name status } }"
NODE_QUERY = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Certificate { name }
    ... on Withdrawal { status certificate { id } }
  }
}
"""
WITHDRAW = """
mutation($id: ID!) {
  withdrawApplication(input: {certificateId: $id}) {
    __typename
    ... on WithdrawApplicationSuccess { withdrawal { id } }
    ... on CertificateNotFoundError { certificateId }
  }
}
"""


def unknown_and_malformed_ids() -> list[str]:
    return [
        to_global_id(CERTIFICATE, "0" * 32),
        "garbage",
        "",
        "Q2VydGlmaWNhdGU6",  # "Certificate:" with no id
        base64.b64encode(b"\xff\xfe").decode(),
        to_global_id("Tenant", "abc"),
        "x" * 10_000,
    ]


async def test_global_ids_are_opaque_base64(api: Api) -> None:
    certificate_id = await api.create()
    decoded = base64.b64decode(certificate_id).decode()
    assert decoded.startswith("Certificate:")


@pytest.mark.parametrize("sent_id", unknown_and_malformed_ids())
async def test_unknown_or_malformed_ids_resolve_to_null_without_errors(
    api: Api, sent_id: str
) -> None:
    result = await api.execute(CERTIFICATE_QUERY, {"id": sent_id})
    assert result.errors is None
    assert result.data == {"certificate": None}
    result = await api.execute(NODE_QUERY, {"id": sent_id})
    assert result.errors is None
    assert result.data == {"node": None}


async def test_node_resolves_certificates_and_withdrawals(api: Api) -> None:
    certificate_id = await api.applied(name="shop")
    withdrawal_id = (await api.data(WITHDRAW, {"id": certificate_id}))["withdrawApplication"][
        "withdrawal"
    ]["id"]
    certificate = (await api.data(NODE_QUERY, {"id": certificate_id}))["node"]
    assert certificate == {"__typename": "Certificate", "id": certificate_id, "name": "shop"}
    withdrawal = (await api.data(NODE_QUERY, {"id": withdrawal_id}))["node"]
    assert withdrawal == {
        "__typename": "Withdrawal",
        "id": withdrawal_id,
        "status": "PENDING",
        "certificate": {"id": certificate_id},
    }


async def test_deleted_certificates_still_resolve_by_id(api: Api) -> None:
    certificate_id = await api.create()
    await api.data(
        "mutation($id: ID!) { deleteCertificate(input: {certificateId: $id}) { __typename } }",
        {"id": certificate_id},
    )
    assert await api.status(certificate_id) == "DELETED"


async def test_the_viewer_is_the_tenant_of_the_token(api: Api) -> None:
    data = await api.data("{ viewer { tenant { id name } } }", caller=api.globex)
    assert data["viewer"]["tenant"] == {
        "id": to_global_id(TENANT, api.globex.tenant_id),
        "name": "globex",
    }


async def test_events_are_oldest_first_and_chain_their_statuses(api: Api) -> None:
    certificate_id = await api.applied()
    await api.data(WITHDRAW, {"id": certificate_id})
    await api.decide(certificate_id, "APPROVE")
    await api.wait_for_status(certificate_id, "PENDING_APPLICATION")
    data = await api.data(
        """query($id: ID!) { certificate(id: $id) {
             version events { id kind fromStatus toStatus at } } }""",
        {"id": certificate_id},
    )
    events = data["certificate"]["events"]
    assert [e["kind"] for e in events] == [
        "CREATED",
        "APPLIED",
        "WITHDRAWAL_REQUESTED",
        "WITHDRAWAL_SUCCEEDED",
    ]
    assert events[0]["fromStatus"] is None
    for previous, event in itertools.pairwise(events):
        assert event["fromStatus"] == previous["toStatus"]
        assert event["at"] >= previous["at"]
    assert len({e["id"] for e in events}) == len(events)
    assert data["certificate"]["version"] == len(events)


# ---- tenant isolation


async def test_another_tenants_certificate_is_indistinguishable_from_a_missing_one(
    api: Api,
) -> None:
    theirs = await api.applied(name="secret")
    withdrawal_id = (await api.data(WITHDRAW, {"id": theirs}))["withdrawApplication"]["withdrawal"][
        "id"
    ]
    globex = api.globex

    assert (await api.data(CERTIFICATE_QUERY, {"id": theirs}, caller=globex)) == {
        "certificate": None
    }
    assert (await api.data(NODE_QUERY, {"id": theirs}, caller=globex)) == {"node": None}
    assert (await api.data(NODE_QUERY, {"id": withdrawal_id}, caller=globex)) == {"node": None}
    listed = await api.data(
        "{ certificates(first: 100) { totalCount nodes { id } } }", caller=globex
    )
    assert listed["certificates"] == {"totalCount": 0, "nodes": []}
    searched = await api.data(
        '{ certificates(filter: {search: "secret"}) { totalCount } }', caller=globex
    )
    assert searched["certificates"]["totalCount"] == 0

    refused = (await api.data(WITHDRAW, {"id": theirs}, caller=globex))["withdrawApplication"]
    assert refused == {"__typename": "CertificateNotFoundError", "certificateId": theirs}
    for mutation in ("deleteCertificate", "verifyDomain"):
        result = await api.data(
            f"""mutation($id: ID!) {{ {mutation}(input: {{certificateId: $id}}) {{
                  __typename ... on CertificateNotFoundError {{ certificateId }} }} }}""",
            {"id": theirs},
            caller=globex,
        )
        assert result[mutation] == {
            "__typename": "CertificateNotFoundError",
            "certificateId": theirs,
        }
    decided = await api.data(
        """mutation($id: ID!) { sandboxCaDecide(input: {certificateId: $id, decision: APPROVE}) {
              __typename } }""",
        {"id": theirs},
        caller=globex,
    )
    assert decided["sandboxCaDecide"]["__typename"] == "CertificateNotFoundError"
    # ... and nothing happened to it.
    assert await api.status(theirs) == "CA_VERIFYING_WITHDRAWAL"


async def test_a_withdrawal_id_of_another_type_is_not_a_certificate(api: Api) -> None:
    certificate_id = await api.applied()
    withdrawal_id = (await api.data(WITHDRAW, {"id": certificate_id}))["withdrawApplication"][
        "withdrawal"
    ]["id"]
    assert (await api.data(CERTIFICATE_QUERY, {"id": withdrawal_id})) == {"certificate": None}
    assert to_global_id(WITHDRAWAL, "x") != withdrawal_id
