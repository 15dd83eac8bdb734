"""Tenant isolation, proven by walking the live schema rather than a hand-made list.

Tenant B (globex) has certificates in several statuses, a withdrawal, events and an
idempotency key. For every Query, Mutation and Subscription field the server introspects,
tenant A (acme) calls it with each of B's ids wherever an argument (or a field of an input
argument) is an ID, and with B's other secrets wherever a string goes. Nothing of B's may come
back, no mutation may succeed, and every database row that mentions any of B's identifiers
must be exactly as it was.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    build_client_schema,
    get_introspection_query,
    get_named_type,
    is_leaf_type,
    print_ast,
)
from graphql.language import ast
from sqlalchemy import MetaData, select, text

from resolvers.ids import from_global_id
from server.persistence.database import Database
from server.persistence.search import search_index
from tests.e2e.conftest import Server, ServerFactory, Subscription

pytestmark = pytest.mark.timeout(240)

SECRET = f"globex-secret-{uuid.uuid4().hex[:8]}"
B_KEY = f"{SECRET}-key"
# Optional inputs that could find B's data: a search for B's names, B's idempotency key.
PROBES = {"search": SECRET, "idempotencyKey": B_KEY}
# Scheduling bookkeeping of the CA worker, which polls B's pending certificates on its own.
VOLATILE_COLUMNS = {"ca_next_poll_at"}


@dataclass
class Victim:
    """Tenant B: its ids (to try) and its secrets (that must never come back)."""

    token: str
    tenant_id: str
    ids: list[str] = field(default_factory=list)  # global ids of every object of B's
    secrets: set[str] = field(default_factory=set)  # strings only B may see
    identifiers: set[str] = field(default_factory=set)  # values that mark a row as B's


async def gql(
    server: Server, token: str, query: str, variables: dict[str, Any] | None = None
) -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            server.graphql_url,
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def ok(
    server: Server, token: str, query: str, variables: dict[str, Any] | None = None
) -> Any:
    body = await gql(server, token, query, variables)
    assert "errors" not in body, body
    return body["data"]


CREATE = """
mutation($name: String!, $type: DomainType!, $quota: Int!) {
  createCertificate(input: {name: $name, type: DV, domainType: $type, brand: "DigiCert",
                            domainQuota: $quota, validityYears: 1}) {
    ... on CreateCertificateSuccess { certificate { id } }
  }
}
"""
APPLY = """
mutation($id: ID!, $domain: String!) {
  applyForCertificate(input: {certificateId: $id, domain: $domain, validationMethod: DNS}) {
    __typename
  }
}
"""
STATUS = "query($id: ID!) { certificate(id: $id) { status } }"


async def build_victim(server: Server) -> Victim:
    token, tenant_id = await server.token("globex")
    victim = Victim(token, tenant_id)

    async def create(label: str, domain_type: str = "SINGLE", quota: int = 1) -> str:
        data = await ok(
            server,
            token,
            CREATE,
            {"name": f"{SECRET}-{label}", "type": domain_type, "quota": quota},
        )
        certificate_id: str = data["createCertificate"]["certificate"]["id"]
        return certificate_id

    async def apply(certificate_id: str, label: str) -> None:
        data = await ok(
            server, token, APPLY, {"id": certificate_id, "domain": f"{label}.{SECRET}.example.com"}
        )
        assert data["applyForCertificate"]["__typename"] == "ApplyForCertificateSuccess"

    await create("new")
    await apply(await create("pending"), "pending")
    await apply(await create("multi", "MULTIPLE", 5), "multi")
    issued = await create("issued")
    await apply(issued, "issued")
    decide = """mutation($id: ID!) {
      sandboxCaDecide(input: {certificateId: $id, decision: ISSUE}) { __typename } }"""
    await ok(server, token, decide, {"id": issued})
    withdrawing = await create("withdrawing")
    await apply(withdrawing, "withdrawing")
    withdraw = """mutation($id: ID!, $key: String!) {
      withdrawApplication(input: {certificateId: $id, idempotencyKey: $key}) { __typename } }"""
    await ok(server, token, withdraw, {"id": withdrawing, "key": B_KEY})
    deadline = time.monotonic() + 15
    while (await ok(server, token, STATUS, {"id": issued}))["certificate"]["status"] != "ISSUED":
        assert time.monotonic() < deadline, "the worker never applied the CA's issue"
        await asyncio.sleep(0.05)

    everything = await ok(
        server,
        token,
        """{ viewer { tenant { id name } }
             certificates(first: 100) { nodes { id name domain additionalDomains
               domainValidation { records { name value } }
               lastWithdrawal { id } events { id } } } }""",
    )
    victim.ids.append(everything["viewer"]["tenant"]["id"])
    victim.secrets |= {SECRET, "globex", tenant_id, B_KEY}
    victim.identifiers |= {tenant_id}
    for node in everything["certificates"]["nodes"]:
        victim.ids.append(node["id"])
        victim.ids.extend(event["id"] for event in node["events"])
        if node["lastWithdrawal"]:
            victim.ids.append(node["lastWithdrawal"]["id"])
        for record in (node["domainValidation"] or {}).get("records", []):
            victim.secrets.add(record["value"])
    for global_id in victim.ids:
        parsed = from_global_id(global_id)
        assert parsed is not None
        victim.identifiers.add(parsed[1])
        victim.secrets |= {global_id, parsed[1]}
    assert len(everything["certificates"]["nodes"]) == 5
    return victim


# ---- B's rows


async def order_ids(database_url: str, tenant_id: str) -> set[str]:
    """B's orders at the simulated CA: its rows there name the order, not the certificate."""
    db = Database(database_url)
    engine = db.engine
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                text("SELECT ca_order_id FROM certificates WHERE tenant_id = :t"), {"t": tenant_id}
            )
            return {row[0] for row in result if row[0]}
    finally:
        await db.dispose()


async def rows_of(database_url: str, identifiers: set[str]) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of every table with a value among `identifiers`, minus volatile columns."""
    db = Database(database_url)
    engine = db.engine
    metadata = MetaData()
    try:
        async with engine.connect() as connection:
            # SQLite's FTS table of the search index holds no rows of its own (contentless) and
            # cannot be read whole; what it indexes is `certificates.search_text`.
            await connection.run_sync(
                metadata.reflect, only=lambda name, _: name != search_index.name
            )
            found: dict[str, set[tuple[Any, ...]]] = {}
            for table in metadata.sorted_tables:
                columns = [c for c in table.columns if c.name not in VOLATILE_COLUMNS]
                result = await connection.execute(select(*table.columns))
                marked = {
                    tuple(str(row._mapping[c.name]) for c in columns)
                    for row in result
                    if any(str(value) in identifiers for value in row)
                }
                if marked:
                    found[table.name] = marked
            return found
    finally:
        await db.dispose()


# ---- walking the schema


@dataclass(frozen=True)
class Call:
    root: str  # query | mutation | subscription
    field: str
    document: str
    variables: dict[str, Any]
    sent_ids: frozenset[str]


def unwrap(type_: GraphQLInputType | GraphQLOutputType) -> tuple[GraphQLNamedType, bool]:
    """The named type, and whether it is a list."""
    is_list = False
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        is_list = is_list or isinstance(type_, GraphQLList)
        type_ = type_.of_type
    return get_named_type(type_), is_list


def takes_ids(
    type_: GraphQLInputType, *, lists: bool = False, seen: frozenset[str] = frozenset()
) -> bool:
    """Whether an ID goes anywhere in this input (with `lists`: a list of IDs)."""
    named, is_list = unwrap(type_)
    if isinstance(named, GraphQLScalarType):
        return named.name == "ID" and (is_list or not lists)
    if isinstance(named, GraphQLInputObjectType) and named.name not in seen:
        return any(
            takes_ids(f.type, lists=lists, seen=seen | {named.name}) for f in named.fields.values()
        )
    return False


def value_for(name: str, type_: GraphQLInputType, id_value: str | list[str], victim: Victim) -> Any:
    """A value for an input of this type: B's ids where IDs go, B's secrets where text goes."""
    named, is_list = unwrap(type_)
    if isinstance(named, GraphQLInputObjectType):
        # Required fields, and the optional ones that can point at B's data.
        value: Any = {
            key: value_for(key, f.type, id_value, victim)
            for key, f in named.fields.items()
            if isinstance(f.type, GraphQLNonNull) or takes_ids(f.type) or key in PROBES
        }
    elif isinstance(named, GraphQLEnumType):
        value = next(iter(named.values))
    elif named.name == "ID":
        if is_list:
            return id_value if isinstance(id_value, list) else [id_value]
        return id_value
    elif named.name == "String":
        # B's secrets where they could find B's data (a search, B's idempotency key); A's
        # own plain values elsewhere, so that what A creates cannot look like B's.
        value = PROBES.get(name, "isolation-probe")
        if name in ("domain", "domains", "additionalDomains"):
            value = "probe.example.com"
    elif named.name == "Int":
        value = 1
    elif named.name == "Boolean":
        # True where it can only reveal (filters, reachability), never destroy.
        value = True
    else:
        return None
    return [value] if is_list else value


def selection(
    type_: GraphQLOutputType, schema: GraphQLSchema, depth: int
) -> ast.SelectionSetNode | None:
    """Every field the type offers (to `depth`), with a fragment per possible type."""
    named, _ = unwrap(type_)
    if is_leaf_type(named):
        return None
    selections: list[ast.SelectionNode] = [ast.FieldNode(name=ast.NameNode(value="__typename"))]
    if isinstance(named, GraphQLUnionType | GraphQLInterfaceType):
        for possible in schema.get_possible_types(named):
            inner = selection(possible, schema, depth)
            if inner is not None:
                selections.append(
                    ast.InlineFragmentNode(
                        type_condition=ast.NamedTypeNode(name=ast.NameNode(value=possible.name)),
                        selection_set=inner,
                    )
                )
    elif isinstance(named, GraphQLObjectType) and depth > 0:
        for name, definition in named.fields.items():
            if any(isinstance(a.type, GraphQLNonNull) for a in definition.args.values()):
                continue
            inner = selection(definition.type, schema, depth - 1)
            if inner is None and not is_leaf_type(unwrap(definition.type)[0]):
                continue
            # Aliased by type: `status` of a Certificate and of a Withdrawal cannot share a name.
            selections.append(
                ast.FieldNode(
                    alias=ast.NameNode(value=f"{named.name}_{name}"),
                    name=ast.NameNode(value=name),
                    selection_set=inner,
                )
            )
    return ast.SelectionSetNode(selections=tuple(selections))


def calls_for(
    root: str, name: str, definition: GraphQLField, schema: GraphQLSchema, victim: Victim
) -> Iterator[Call]:
    arguments: dict[str, GraphQLArgument] = dict(definition.args)
    with_ids = [a for a, arg in arguments.items() if takes_ids(arg.type)]
    # Each of B's ids alone, and all of them at once where a list of ids is taken.
    choices: list[str | list[str]] = list(victim.ids) if with_ids else [""]
    if any(takes_ids(arg.type, lists=True) for arg in arguments.values()):
        choices.append(list(victim.ids))
    for id_value in choices:
        variables = {}
        definitions = []
        for arg_name, arg in arguments.items():
            # Optional arguments only where B's ids or secrets can go.
            optional = not isinstance(arg.type, GraphQLNonNull)
            if optional and arg_name not in with_ids and arg_name != "filter":
                continue
            value = value_for(arg_name, arg.type, id_value, victim)
            variables[arg_name] = value
            definitions.append(
                ast.VariableDefinitionNode(
                    variable=ast.VariableNode(name=ast.NameNode(value=arg_name)),
                    type=type_node(arg.type),
                )
            )
        operation = ast.OperationDefinitionNode(
            operation=ast.OperationType(root),
            variable_definitions=tuple(definitions),
            selection_set=ast.SelectionSetNode(
                selections=(
                    ast.FieldNode(
                        name=ast.NameNode(value=name),
                        arguments=tuple(
                            ast.ArgumentNode(
                                name=ast.NameNode(value=a),
                                value=ast.VariableNode(name=ast.NameNode(value=a)),
                            )
                            for a in variables
                        ),
                        selection_set=selection(definition.type, schema, 3),
                    ),
                )
            ),
        )
        sent = id_value if isinstance(id_value, list) else [id_value]
        yield Call(
            root,
            name,
            print_ast(ast.DocumentNode(definitions=(operation,))),
            variables,
            frozenset(i for i in sent if i),
        )


def type_node(type_: GraphQLInputType) -> ast.TypeNode:
    if isinstance(type_, GraphQLNonNull):
        inner = type_node(type_.of_type)
        assert isinstance(inner, ast.NamedTypeNode | ast.ListTypeNode)
        return ast.NonNullTypeNode(type=inner)
    if isinstance(type_, GraphQLList):
        return ast.ListTypeNode(type=type_node(type_.of_type))
    return ast.NamedTypeNode(name=ast.NameNode(value=get_named_type(type_).name))


def leaks(value: Any, call: Call, victim: Victim) -> list[str]:
    """B's secrets in a response, except B's ids echoed back as the ids A sent."""
    found: list[str] = []
    if isinstance(value, dict):
        for inner in value.values():
            found += leaks(inner, call, victim)
    elif isinstance(value, list):
        for inner in value:
            found += leaks(inner, call, victim)
    elif isinstance(value, str) and value not in call.sent_ids:
        found += [secret for secret in victim.secrets if secret and secret in value]
    return found


async def test_tenant_a_reaches_nothing_of_tenant_b_through_any_field(
    start_server: ServerFactory,
) -> None:
    # Hundreds of calls, each asking for every field: no rate or size limits in the way.
    server = start_server(
        rate_limit_per_second=0, max_aliases=10_000, max_cost=1_000_000, max_tokens=100_000
    )
    victim = await build_victim(server)
    victim.identifiers |= await order_ids(server.database_url, victim.tenant_id)
    attacker, attacker_id = await server.token("acme")
    async with httpx.AsyncClient(timeout=30) as client:
        introspected = await client.post(
            server.graphql_url,
            json={"query": get_introspection_query()},
            headers={"Authorization": f"Bearer {attacker}"},
        )
    schema = build_client_schema(introspected.json()["data"])
    roots = {
        "query": schema.query_type,
        "mutation": schema.mutation_type,
        "subscription": schema.subscription_type,
    }
    calls: list[Call] = []
    id_fields: dict[str, set[str]] = {root: set() for root in roots}
    for root, root_type in roots.items():
        assert root_type is not None
        for name, definition in root_type.fields.items():
            if any(takes_ids(a.type) for a in definition.args.values()):
                id_fields[root].add(name)
            calls += calls_for(root, name, definition, schema, victim)
    # The walk found ID-taking fields at every root (so it cannot pass by finding none).
    assert all(id_fields.values()), id_fields
    assert {"node", "certificate", "withdrawApplication", "certificateStatusChanged"} <= set(
        itertools.chain(*id_fields.values())
    )

    # The detector works: the same lookups made with B's own token do find B's data.
    controls = [
        c
        for c in calls
        if c.root == "query"
        and (
            c.field == "certificates" or (c.field == "certificate" and victim.ids[1] in c.sent_ids)
        )
    ]
    assert len(controls) == 2
    for control in controls:
        assert leaks(
            await gql(server, victim.token, control.document, control.variables), control, victim
        )

    before = await rows_of(server.database_url, victim.identifiers)
    assert before["certificates"] and len(before["certificates"]) == 5

    answered = 0
    for call in (c for c in calls if c.root != "subscription"):
        body = await gql(server, attacker, call.document, call.variables)
        answered += 1
        assert not leaks(body, call, victim), (call.field, call.variables, body)
        if call.root == "mutation" and call.sent_ids:
            result = (body.get("data") or {}).get(call.field)
            assert result is None or result["__typename"].endswith("Error"), (call, body)
    assert answered > 3 * len(victim.ids)

    after = await rows_of(server.database_url, victim.identifiers)
    assert after == before

    # Subscriptions: A listens with B's ids (and to everything), B changes its certificates.
    subscription_calls = [c for c in calls if c.root == "subscription"]
    assert subscription_calls
    await listen_while_b_changes(server, attacker, attacker_id, victim, subscription_calls)
    fields = sum(len(root_type.fields) for root_type in roots.values() if root_type)
    print(
        f"\nisolation: {fields} root fields walked, {sum(map(len, id_fields.values()))} take ids; "
        f"{answered} queries and mutations and {len(subscription_calls)} subscriptions with "
        f"{len(victim.ids)} of B's ids; B's {sum(map(len, before.values()))} rows unchanged"
    )


async def listen_while_b_changes(
    server: Server, attacker: str, attacker_id: str, victim: Victim, calls: list[Call]
) -> None:
    control_query = "subscription { certificateStatusChanged { status certificate { id } } }"
    async with (
        server.websocket(attacker) as a_first,
        server.websocket(attacker) as a_second,
        server.websocket(victim.token) as b_ws,
    ):
        # A socket runs a bounded number of operations: A's listening is spread over two.
        half = (len(calls) + 1) // 2
        listened = [Subscription(a_first, c.document, c.variables) for c in calls[:half]]
        listened += [Subscription(a_second, c.document, c.variables) for c in calls[half:]]
        control = Subscription(b_ws, control_query, {})
        try:
            deadline = time.monotonic() + 15
            while server.subscriber_count(victim.tenant_id) < 1:  # type: ignore[arg-type]
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            while server.subscriber_count(attacker_id) < len(listened):  # type: ignore[arg-type]
                assert time.monotonic() < deadline, "A's subscriptions never reached the server"
                await asyncio.sleep(0.02)
            certificates = await ok(
                server, victim.token, "{ certificates { nodes { id status } } }"
            )
            new = next(
                n["id"]
                for n in certificates["certificates"]["nodes"]
                if n["status"] == "PENDING_APPLICATION"
            )
            deleted = await ok(
                server,
                victim.token,
                """mutation($id: ID!) {
                  deleteCertificate(input: {certificateId: $id}) { __typename } }""",
                {"id": new},
            )
            assert deleted["deleteCertificate"]["__typename"] == "CertificateChangeSuccess"
            heard = await control.next()
            assert heard["certificateStatusChanged"]["certificate"]["id"] == new
            await asyncio.sleep(0.5)
            assert all(s.pending() == 0 for s in listened), "A heard of B's change"
        finally:
            await control.close()
            for subscription in listened:
                await subscription.close()
