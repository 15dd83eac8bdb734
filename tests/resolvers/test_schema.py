"""The schema: schema.graphql is its export, it contains the contract, sandbox and production."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import graphql
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
)
from typer.testing import CliRunner

from domain.reading import Page
from resolvers.context import Context
from resolvers.errors import error_code
from server import cli
from server.http.schema import build_schema, export_sdl
from tests.resolvers.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT.parent / "shared" / "contract.graphql"


def parse(sdl: str) -> GraphQLSchema:
    return graphql.build_schema(sdl)


def entry_differences(
    label: str,
    wanted: Mapping[str, Any],
    ours: Mapping[str, Any],
    required: Callable[[Any], bool] | None = None,
) -> list[str]:
    """The fields (or arguments) of `wanted` that `ours` lacks or types differently and, with
    `required`, those `ours` adds that a contract client could not leave out. `label` names
    an entry: its `{}` is the entry's name."""
    problems: list[str] = []
    for key, entry in wanted.items():
        mine = ours.get(key)
        if mine is None:
            problems.append(f"{label.format(key)} is missing")
        elif str(mine.type) != str(entry.type):
            problems.append(f"{label.format(key)} is {mine.type}, not {entry.type}")
    if required is not None:
        for key, mine in ours.items():
            if key not in wanted and required(mine):
                problems.append(f"{label.format(key)} is extra and required")
    return problems


def contract_differences(contract: GraphQLSchema, ours: GraphQLSchema) -> list[str]:
    """Everything the contract has that `ours` lacks or types differently (nullability too)."""
    problems: list[str] = []
    for name, wanted in contract.type_map.items():
        if name.startswith("__"):
            continue
        have = ours.type_map.get(name)
        if have is None:
            problems.append(f"type {name} is missing")
            continue
        if type(have) is not type(wanted):
            problems.append(f"{name} is a {type(have).__name__}, not {type(wanted).__name__}")
            continue
        if isinstance(wanted, GraphQLEnumType):
            assert isinstance(have, GraphQLEnumType)
            for value in set(wanted.values) - set(have.values):
                problems.append(f"enum {name} lacks {value}")
        elif isinstance(wanted, GraphQLUnionType):
            assert isinstance(have, GraphQLUnionType)
            members = {t.name for t in have.types}
            for member in wanted.types:
                if member.name not in members:
                    problems.append(f"union {name} lacks {member.name}")
        elif isinstance(wanted, GraphQLInputObjectType):
            assert isinstance(have, GraphQLInputObjectType)
            problems += entry_differences(
                f"input {name}.{{}}",
                wanted.fields,
                have.fields,
                graphql.is_required_input_field,
            )
        elif isinstance(wanted, GraphQLObjectType | GraphQLInterfaceType):
            assert isinstance(have, GraphQLObjectType | GraphQLInterfaceType)
            interfaces = {i.name for i in have.interfaces}
            for interface in wanted.interfaces:
                if interface.name not in interfaces:
                    problems.append(f"{name} does not implement {interface.name}")
            # A field the contract lacks is fine; it only adds to what a client may ask.
            problems += entry_differences(f"{name}.{{}}", wanted.fields, have.fields)
            for field_name, field in wanted.fields.items():
                if (ours_field := have.fields.get(field_name)) is not None:
                    problems += entry_differences(
                        f"{name}.{field_name}({{}})",
                        field.args,
                        ours_field.args,
                        graphql.is_required_argument,
                    )
        else:
            assert isinstance(wanted, GraphQLScalarType)
    for root in ("query_type", "mutation_type", "subscription_type"):
        wanted_root, ours_root = getattr(contract, root), getattr(ours, root)
        if wanted_root is not None and (ours_root is None or ours_root.name != wanted_root.name):
            problems.append(f"the {root} differs")
    return problems


def test_schema_graphql_is_the_exported_schema() -> None:
    assert (ROOT / "schema.graphql").read_text() == export_sdl(), (
        "schema.graphql is stale: run `certgraph export-schema > schema.graphql`"
    )


def test_certgraph_export_schema_prints_schema_graphql() -> None:
    result = CliRunner().invoke(cli.app, ["export-schema"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (ROOT / "schema.graphql").read_text()


def test_the_schema_contains_the_contract() -> None:
    contract = parse(CONTRACT.read_text())
    assert contract_differences(contract, parse(export_sdl())) == []


def test_the_comparison_notices_a_nullability_change() -> None:
    contract = parse(CONTRACT.read_text())
    weakened = export_sdl().replace("statusLabel: String!", "statusLabel: String")
    assert contract_differences(contract, parse(weakened)) == [
        "Certificate.statusLabel is String, not String!"
    ]


def test_without_the_sandbox_only_the_sandbox_is_missing() -> None:
    contract = parse(CONTRACT.read_text())
    plain = parse(build_schema(sandbox=False).as_str())
    problems = contract_differences(contract, plain)
    assert problems
    assert all("Sandbox" in p or "sandbox" in p for p in problems), problems
    assert plain.mutation_type is not None
    assert "sandboxCaDecide" not in plain.mutation_type.fields
    assert "sandboxSetCaReachable" not in plain.mutation_type.fields


@pytest.mark.parametrize(
    ("type_name", "code"),
    [
        ("CertificateNotFoundError", "CERTIFICATE_NOT_FOUND"),
        ("InvalidCertificateStateError", "INVALID_CERTIFICATE_STATE"),
        ("WithdrawalNotAllowedError", "WITHDRAWAL_NOT_ALLOWED"),
        ("CaAlreadyApprovedError", "CA_ALREADY_APPROVED"),
        ("CaUnavailableError", "CA_UNAVAILABLE"),
        ("ValidationError", "VALIDATION"),
    ],
)
def test_error_codes_are_the_type_name_in_upper_snake_case(type_name: str, code: str) -> None:
    assert error_code(type_name) == code


async def test_production_turns_off_introspection_and_suggestions(api: Api) -> None:
    production = build_schema(sandbox=False, production=True, introspection=False)
    context = api.context()
    introspection = await production.execute(
        "{ __schema { types { name } } }", context_value=context
    )
    assert introspection.errors and introspection.data is None
    typo = await production.execute("{ certificats { totalCount } }", context_value=context)
    assert typo.errors
    assert "Did you mean" not in typo.errors[0].message
    development = await api.schema.execute("{ certificats { totalCount } }", context_value=context)
    assert development.errors and "Did you mean" in development.errors[0].message


class BrokenReader:
    """A read side that fails the way a bug would."""

    async def page(self, *args: object) -> Page:
        raise RuntimeError("secret internals")

    async def count(self, *args: object) -> int:
        raise RuntimeError("secret internals")

    async def certificates(self, *args: object) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    async def withdrawals(self, *args: object) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    async def events(self, *args: object) -> dict[str, Any]:
        raise RuntimeError("secret internals")


async def test_production_masks_unexpected_errors_but_not_the_clients_mistakes(
    api: Api,
) -> None:
    production = build_schema(sandbox=False, production=True)
    context = api.context()
    broken = Context(replace(context.services, reader=BrokenReader()), api.acme)
    masked = await production.execute("{ certificates { totalCount } }", context_value=broken)
    assert masked.errors
    assert masked.errors[0].message == "Unexpected error."
    paging = await production.execute(
        "{ certificates(first: 500) { totalCount } }", context_value=context
    )
    assert paging.errors and paging.errors[0].extensions == {"code": "BAD_USER_INPUT"}
    assert "100" in paging.errors[0].message
    syntax = await production.execute("{ certificates(", context_value=context)
    assert syntax.errors and "Syntax Error" in syntax.errors[0].message


async def test_development_shows_unexpected_errors(api: Api) -> None:
    broken = Context(replace(api.context().services, reader=BrokenReader()), api.acme)
    result = await api.schema.execute("{ certificates { totalCount } }", context_value=broken)
    assert result.errors and "secret internals" in result.errors[0].message
