"""Application input rules: host names, wildcards, quota, organization."""

from __future__ import annotations

import pytest

from domain.statuses import CertificateType, DomainType
from domain.validation import (
    InputProblem,
    check_domains,
    check_new_certificate,
    check_organization,
    normalize_host,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("  shop.example.com ", "shop.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a-b.c-d.io", "a-b.c-d.io"),
    ],
)
def test_domains_are_normalised(raw: str, expected: str) -> None:
    assert normalize_host(raw, wildcard_allowed=False) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "localhost",
        "-bad.example.com",
        "bad-.example.com",
        "exa mple.com",
        "a..b.com",
        "x" * 64 + ".com",
        "1.2.3.4",
        "*.example.com",
        "ex*ample.com",
        "sub.*.example.com",
    ],
)
def test_invalid_host_names_are_refused(raw: str) -> None:
    assert isinstance(normalize_host(raw, wildcard_allowed=False), InputProblem)


def test_a_leading_wildcard_is_allowed_only_for_wildcard_certificates() -> None:
    assert check_domains("*.Example.com", [], DomainType.WILDCARD, 1) == ("*.example.com",)
    problem = check_domains("*.example.com", [], DomainType.SINGLE, 1)
    assert isinstance(problem, InputProblem) and problem.field == "input.domain"
    problem = check_domains("example.com", [], DomainType.WILDCARD, 1)
    assert isinstance(problem, InputProblem) and problem.field == "input.domain"


def test_single_and_wildcard_cover_exactly_one_domain() -> None:
    problem = check_domains("a.example.com", ["b.example.com"], DomainType.SINGLE, 1)
    assert isinstance(problem, InputProblem) and problem.field == "input.additionalDomains"


def test_multiple_respects_the_quota_and_refuses_duplicates() -> None:
    ok = check_domains("a.example.com", ["B.example.com"], DomainType.MULTIPLE, 2)
    assert ok == ("a.example.com", "b.example.com")
    over = check_domains(
        "a.example.com", ["b.example.com", "c.example.com"], DomainType.MULTIPLE, 2
    )
    assert isinstance(over, InputProblem) and "at most 2" in over.message
    twice = check_domains("a.example.com", ["A.example.com."], DomainType.MULTIPLE, 5)
    assert isinstance(twice, InputProblem) and twice.field == "input.additionalDomains[0]"


def test_added_domains_count_against_the_quota_with_the_existing_ones() -> None:
    existing = ("a.example.com", "b.example.com")
    added = check_domains(
        "",
        ["c.example.com"],
        DomainType.MULTIPLE,
        3,
        existing=existing,
        primary_field="",
        additional_field="input.domains",
    )
    assert added == ("c.example.com",)
    over = check_domains(
        "",
        ["c.example.com", "d.example.com"],
        DomainType.MULTIPLE,
        3,
        existing=existing,
        primary_field="",
        additional_field="input.domains",
    )
    assert isinstance(over, InputProblem) and over.field == "input.domains"


def test_ov_and_ev_need_an_organization_with_an_iso_country() -> None:
    missing = check_organization(CertificateType.OV, None, None)
    assert isinstance(missing, InputProblem) and missing.field == "input.organization"
    assert check_organization(CertificateType.DV, None, None) is None
    assert check_organization(CertificateType.EV, " Acme ", "gb") == ("Acme", "GB")
    bad = check_organization(CertificateType.EV, "Acme", "UK")
    assert isinstance(bad, InputProblem) and bad.field == "input.organization.country"


def test_new_certificate_rules() -> None:
    assert check_new_certificate("web", "DigiCert", DomainType.MULTIPLE, 5, 1) is None
    assert check_new_certificate("", "DigiCert", DomainType.SINGLE, 1, 1) == InputProblem(
        "input.name", "A name of 1 to 200 characters is required."
    )
    quota = check_new_certificate("web", "DigiCert", DomainType.SINGLE, 2, 1)
    assert quota is not None and quota.field == "input.domainQuota"
    years = check_new_certificate("web", "DigiCert", DomainType.SINGLE, 1, 0)
    assert years is not None and years.field == "input.validityYears"
