"""Every string and list of a request is bounded before any work: past the bounds of
`domain.validation`, BAD_USER_INPUT before a resolver runs; within them, each field's own rules
answer with the typed ValidationError, checking counts before normalising anything."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest
import strawberry

import domain.validation
from domain.validation import MAX_INPUT_LIST, MAX_INPUT_STRING
from graphql_engine.limits import QueryLimits
from server.http.schema import build_schema
from tests.resolvers.conftest import APPLY, CREATE, Api


def limited() -> strawberry.Schema:
    return build_schema(sandbox=True, limits=QueryLimits())


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The raw host names the domain rules normalise, from now on."""
    seen: list[str] = []
    normalize: Callable[..., Any] = domain.validation.normalize_host

    def counted(raw: str, **kwargs: Any) -> Any:
        seen.append(raw)
        return normalize(raw, **kwargs)

    monkeypatch.setattr(domain.validation, "normalize_host", counted)
    return seen


def apply_input(certificate_id: str, additional: list[str]) -> dict[str, Any]:
    return {
        "input": {
            "certificateId": certificate_id,
            "domain": "www.example.com",
            "additionalDomains": additional,
            "validationMethod": "DNS",
        }
    }


def hosts(count: int) -> list[str]:
    return [f"host{i}.example.com" for i in range(count)]


def code(result: Any) -> str:
    [error] = result.errors or []
    return str(error.extensions["code"])


async def test_forty_thousand_domains_are_refused_before_any_domain_is_looked_at(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate_id = await api.create(domain_type="MULTIPLE", quota=250)
    normalised = counting(monkeypatch)
    result = await limited().execute(
        APPLY, apply_input(certificate_id, hosts(40_000)), context_value=api.context()
    )
    assert result.data is None and code(result) == "BAD_USER_INPUT"
    assert normalised == []
    assert await api.status(certificate_id) == "PENDING_APPLICATION"


async def test_a_list_over_the_quota_is_a_validation_error_before_any_domain_is_normalised(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate_id = await api.create(domain_type="MULTIPLE", quota=250)
    normalised = counting(monkeypatch)
    # 1 + 250 domains: within the request bound, over the certificate's quota.
    result = await limited().execute(
        APPLY, apply_input(certificate_id, hosts(MAX_INPUT_LIST)), context_value=api.context()
    )
    assert not result.errors, result.errors
    assert result.data is not None
    refusal = result.data["applyForCertificate"]
    assert refusal["__typename"] == "ValidationError"
    assert refusal["field"] == "input.additionalDomains"
    assert "at most 250 domains (251 given)" in refusal["message"]
    assert normalised == []


async def test_a_list_at_the_quota_is_accepted(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    certificate_id = await api.create(domain_type="MULTIPLE", quota=250)
    normalised = counting(monkeypatch)
    result = await limited().execute(
        APPLY, apply_input(certificate_id, hosts(249)), context_value=api.context()
    )
    assert not result.errors, result.errors
    assert result.data is not None
    assert result.data["applyForCertificate"]["__typename"] == "ApplyForCertificateSuccess"
    assert len(normalised) == 250


async def test_an_overlong_host_name_is_refused_without_normalising_it(api: Api) -> None:
    certificate_id = await api.create()
    result = await api.apply(certificate_id, "a" * 1_500 + ".example.com")
    assert result["__typename"] == "ValidationError"
    assert result["field"] == "input.domain"
    assert len(result["message"]) < 200


def create_input(name: str) -> dict[str, Any]:
    return {
        "input": {
            "name": name,
            "type": "DV",
            "domainType": "SINGLE",
            "brand": "DigiCert",
            "domainQuota": 1,
            "validityYears": 1,
        }
    }


async def test_a_string_over_the_request_bound_is_bad_user_input(api: Api) -> None:
    schema = limited()
    # Within the request bound, a name's own rule answers in the result union.
    long = await schema.execute(CREATE, create_input("n" * 300), context_value=api.context())
    assert long.data is not None
    assert long.data["createCertificate"]["__typename"] == "ValidationError"
    # Past it, as a variable or written in the document: refused before the resolver.
    huge = "n" * (MAX_INPUT_STRING + 1)
    variable = await schema.execute(CREATE, create_input(huge), context_value=api.context())
    assert variable.data is None and code(variable) == "BAD_USER_INPUT"
    literal = await schema.execute(
        f'{{ certificate(id: "{huge}") {{ id }} }}', context_value=api.context()
    )
    assert literal.data is None and code(literal) == "BAD_USER_INPUT"
    listed = await schema.execute(
        "query($s: [CertificateStatus!]) { certificates(filter: {status: $s}) { totalCount } }",
        {"s": ["ISSUED"] * (MAX_INPUT_LIST + 1)},
        context_value=api.context(),
    )
    assert listed.data is None and code(listed) == "BAD_USER_INPUT"


async def test_a_subscription_to_too_many_ids_is_refused(api: Api) -> None:
    stream = await limited().subscribe(
        "subscription($ids: [ID!]) { certificateStatusChanged(certificateIds: $ids) { status } }",
        variable_values={"ids": ["x"] * (MAX_INPUT_LIST + 1)},
        context_value=api.context(cache=False),
    )
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    await stream.aclose()
    assert first.data is None and code(first) == "BAD_USER_INPUT"
