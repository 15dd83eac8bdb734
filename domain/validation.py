"""Domain layer: the input rules of an application (host names, quota, organization), and the
bounds every input of the API is held to before any work is done with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.statuses import CertificateType, DomainType

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# ISO 3166-1 alpha-2 codes officially assigned (plus XK, widely used for Kosovo).
_COUNTRIES = frozenset(
    {
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "XK",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    }
)
MAX_NAME = 200
MAX_BRAND = 100
MAX_VALIDITY_YEARS = 10
MAX_QUOTA = 250
# A host name has at most 253 characters, plus "*." for a wildcard and a trailing dot; more
# is refused before the (IDNA) normalisation, whose work grows with the text.
MAX_HOST_INPUT = 256

# Every string and list of a request, whatever its field, is refused past these before the
# operation runs (BAD_USER_INPUT). The longest legitimate string is a cursor over a name of
# 200 four-byte characters (about 1,150); the longest legitimate list, a certificate's domains.
MAX_INPUT_STRING = 2_000
MAX_INPUT_LIST = MAX_QUOTA


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One rejected input field, as a dotted path, with a message a person can act on."""

    field: str
    message: str


def normalize_host(raw: str, *, wildcard_allowed: bool) -> str | InputProblem:
    """Lower case, no trailing dot, internationalised labels as punycode; `*.` only in front."""
    if len(raw) > MAX_HOST_INPUT:
        return InputProblem("", f"'{raw[:64]}…' is longer than a host name can be.")
    name = raw.strip().rstrip(".").lower() if raw.strip() != "." else ""
    if not name:
        return InputProblem("", "A domain name is required.")
    wildcard = name.startswith("*.")
    if wildcard:
        if not wildcard_allowed:
            return InputProblem(
                "", f"'{raw}': a wildcard is allowed only on WILDCARD certificates."
            )
        name = name[2:]
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return InputProblem("", f"'{raw}' is not a valid host name.")
    labels = ascii_name.split(".")
    if (
        len(ascii_name) > 253
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        return InputProblem("", f"'{raw}' is not a valid host name.")
    return ("*." if wildcard else "") + ascii_name


def check_domains(
    domain: str,
    additional: list[str],
    domain_type: DomainType,
    quota: int,
    *,
    existing: tuple[str, ...] = (),
    primary_field: str = "input.domain",
    additional_field: str = "input.additionalDomains",
) -> tuple[str, ...] | InputProblem:
    """Normalise the domains of an application (or an addition) and apply the quota rules.

    The counts are checked first, so that no more than the quota is ever normalised."""
    total = len(existing) + (1 if primary_field else 0) + len(additional)
    if domain_type is not DomainType.MULTIPLE and total > 1:
        return InputProblem(
            additional_field, f"A {domain_type} certificate covers exactly one domain."
        )
    if total > quota:
        return InputProblem(
            additional_field or primary_field,
            f"This certificate covers at most {quota} domains ({total} given).",
        )
    wildcard = domain_type is DomainType.WILDCARD
    names: list[str] = []
    seen = set(existing)
    raw_items = ([(primary_field, domain)] if primary_field else []) + [
        (f"{additional_field}[{i}]", value) for i, value in enumerate(additional)
    ]
    for field, raw in raw_items:
        result = normalize_host(raw, wildcard_allowed=wildcard)
        if isinstance(result, InputProblem):
            return InputProblem(field, result.message)
        if result in seen:
            return InputProblem(field, f"'{result}' is listed twice.")
        seen.add(result)
        names.append(result)
    if wildcard and primary_field and not names[0].startswith("*."):
        return InputProblem(primary_field, "A WILDCARD certificate covers one '*.' domain.")
    return tuple(names)


def check_organization(
    certificate_type: CertificateType, name: str | None, country: str | None
) -> tuple[str, str] | InputProblem | None:
    """OV and EV need the organization; DV ignores none given and refuses one given."""
    if name is None or country is None:
        if certificate_type.needs_organization:
            return InputProblem(
                "input.organization", f"An {certificate_type} certificate needs the organization."
            )
        return None
    clean_name = name.strip()
    if not clean_name or len(clean_name) > MAX_NAME:
        return InputProblem("input.organization.name", "The organization name is required.")
    code = country.strip().upper()
    if not _COUNTRY.match(code) or code not in _COUNTRIES:
        return InputProblem(
            "input.organization.country", f"'{country}' is not an ISO 3166-1 alpha-2 country code."
        )
    return clean_name, code


def check_new_certificate(
    name: str, brand: str, domain_type: DomainType, quota: int, validity_years: int
) -> InputProblem | None:
    if not name.strip() or len(name) > MAX_NAME:
        return InputProblem("input.name", f"A name of 1 to {MAX_NAME} characters is required.")
    if not brand.strip() or len(brand) > MAX_BRAND:
        return InputProblem("input.brand", f"A brand of 1 to {MAX_BRAND} characters is required.")
    if domain_type is DomainType.MULTIPLE:
        if not 1 <= quota <= MAX_QUOTA:
            return InputProblem("input.domainQuota", f"The quota must be 1 to {MAX_QUOTA}.")
    elif quota != 1:
        return InputProblem("input.domainQuota", f"A {domain_type} certificate has a quota of 1.")
    if not 1 <= validity_years <= MAX_VALIDITY_YEARS:
        return InputProblem(
            "input.validityYears", f"Validity must be 1 to {MAX_VALIDITY_YEARS} years."
        )
    return None
