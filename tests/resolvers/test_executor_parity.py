"""The fast executor and graphql-core's regular one (`CERTGRAPH_FAST_EXECUTOR=0`) give the
same JSON for generated documents on the real schema: aliases, named and inline fragments,
`@include`/`@skip`, refused arguments, and null propagation from a field that cannot be
completed. An upgrade of Strawberry or graphql-core that makes the two drift fails here."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import strawberry
from graphql import (
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLUnionType,
    get_named_type,
    is_leaf_type,
)
from sqlalchemy import update

from resolvers.context import Caller
from server.http.schema import build_schema
from server.persistence.mapping import certificates
from tests.resolvers.conftest import Api, insert_certificate, start_api

DOCUMENTS = 300
STATUSES = [
    "PENDING_APPLICATION",
    "PENDING_DOMAIN_VERIFICATION",
    "CA_VERIFYING_WITHDRAWAL",
    "ISSUED",
    "REVOKED",
    "DELETED",
]


@pytest.fixture
async def seeded(migrated_sqlite_url: str) -> AsyncIterator[tuple[Api, list[str], Caller]]:
    api = await start_api(migrated_sqlite_url, run_background=False)
    engine = api.container.db.engine
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [
        await insert_certificate(
            engine,
            api.acme.tenant_id,
            name=f"cert {n}",
            created_at=start + timedelta(minutes=n % 4),  # ties, broken by id
            status=STATUSES[n % len(STATUSES)],
            domain=None if n % 3 == 0 else f"host{n}.example.com",
            expires_at=start + timedelta(days=365)
            if STATUSES[n % len(STATUSES)] == "ISSUED"
            else None,
            withdrawn=STATUSES[n % len(STATUSES)] == "CA_VERIFYING_WITHDRAWAL",
        )
        for n in range(12)
    ]
    # A tenant whose one certificate holds a status the schema cannot represent: the
    # non-null `status` fails and the null propagates up through the lists.
    corrupt = await api.container.tenants.ensure_tenant("corrupt")
    broken = await insert_certificate(
        engine, corrupt.id, name="broken", created_at=start, domain="broken.example.com"
    )
    async with engine.begin() as connection:
        await connection.execute(
            update(certificates)
            .where(certificates.c.tenant_id == corrupt.id)
            .values(status="BOGUS")
        )
    ids.append(broken)
    yield api, ids, Caller(corrupt.id, corrupt.name)
    await api.container.close()


class Generator:
    """Random documents over the real schema's output types."""

    def __init__(self, schema: strawberry.Schema, ids: list[str], seed: int) -> None:
        self.schema = schema._schema
        self.ids = ids
        self.random = random.Random(seed)
        self.fragments: list[str] = []
        self.aliases = 0

    def document(self) -> tuple[str, dict[str, Any]]:
        query = self.schema.query_type
        assert query is not None
        selections = self.selection_set(query, depth=0, top=True)
        body = "query Q($yes: Boolean!, $no: Boolean!) " + selections
        return "\n".join([body, *self.fragments]), {"yes": True, "no": False}

    def selection_set(self, parent: GraphQLNamedType, depth: int, top: bool = False) -> str:
        parts: list[str] = []
        if isinstance(parent, GraphQLUnionType | GraphQLInterfaceType):
            parts.append("__typename")
            possible = self.schema.get_possible_types(parent)
            for target in self.random.sample(possible, k=min(len(possible), 2)):
                parts.append(f"... on {target.name} {self.selection_set(target, depth + 1)}")
            return "{ " + " ".join(parts) + " }"
        assert isinstance(parent, GraphQLObjectType)
        names = list(parent.fields)
        count = len(names) if top else self.random.randint(1, min(len(names), 6))
        for name in self.random.sample(names, k=count):
            part = self.field(name, parent.fields[name], depth)
            if part is not None:
                parts.append(part)
        if not parts or self.random.random() < 0.2:
            parts.append("__typename")
        if self.random.random() < 0.15:
            parts.append(f"... on {parent.name} {{ __typename }}")
        if depth < 4 and self.random.random() < 0.2:
            fragment = f"F{len(self.fragments)}"
            self.fragments.append("")  # reserve the name before building it
            extra = self.random.choice(names)
            built = self.field(extra, parent.fields[extra], depth + 1)
            self.fragments[int(fragment[1:])] = (
                f"fragment {fragment} on {parent.name} {{ {built or '__typename'} }}"
            )
            parts.append(f"...{fragment}")
        return "{ " + " ".join(parts) + " }"

    def field(self, name: str, definition: GraphQLField, depth: int) -> str | None:
        arguments = self.arguments(name, definition)
        if arguments is None:
            return None
        text = name
        if self.random.random() < 0.25 and self.aliases < 10:
            self.aliases += 1
            text = f"a{self.aliases}: {name}"
        text += arguments
        roll = self.random.random()
        if roll < 0.1:
            text += " @include(if: $no)"
        elif roll < 0.2:
            text += " @skip(if: $no)"
        elif roll < 0.25:
            text += " @include(if: $yes)"
        named = get_named_type(definition.type)
        if is_leaf_type(named):
            return text
        if depth >= 4:
            return None
        return f"{text} {self.selection_set(named, depth + 1)}"

    def arguments(self, name: str, definition: GraphQLField) -> str | None:
        if not definition.args:
            return ""
        if name in ("node", "certificate"):
            choice = self.random.random()
            if choice < 0.1:
                return '(id: "not-an-id")'
            return f'(id: "{self.random.choice(self.ids)}")'
        if name == "certificates":
            roll = self.random.random()
            if roll < 0.05:
                return "(first: 101)"  # refused: BAD_USER_INPUT, and `data` is null
            if roll < 0.3:
                return f"(last: {self.random.randint(0, 5)})"
            if roll < 0.45:
                return (
                    "(filter: {status: [DELETED, ISSUED]}, orderBy: {field: NAME, direction: ASC})"
                )
            return f"(first: {self.random.randint(0, 8)})"
        return None


def as_json(result: Any) -> bytes:
    # The order of errors is not the spec's to fix: concurrent fields fail in any order.
    errors: list[Any] = sorted(
        (error.formatted for error in result.errors or []),
        key=lambda error: orjson.dumps(error, option=orjson.OPT_SORT_KEYS),
    )
    if result.data is None and errors:
        # A non-null field failed and nulled the whole answer: which of the fields running
        # beside it had failed too by then is timing, not the executor. What failed must match.
        errors = sorted({(e["message"], e.get("extensions", {}).get("code")) for e in errors})
    return orjson.dumps({"data": result.data, "errors": errors}, option=orjson.OPT_SORT_KEYS)


async def test_both_executors_answer_generated_documents_identically(
    seeded: tuple[Api, list[str], Caller],
) -> None:
    api, ids, corrupt = seeded
    fast = build_schema(sandbox=True)
    plain = build_schema(sandbox=True, fast_executor=False)
    outcomes = {"errors": 0, "data": 0, "null_data": 0}
    for seed in range(DOCUMENTS):
        generator = Generator(fast, ids, seed)
        document, variables = generator.document()
        caller = corrupt if seed % 10 == 0 else api.acme
        answers = [
            await schema.execute(
                document, variable_values=variables, context_value=api.context(caller)
            )
            for schema in (fast, plain)
        ]
        first, second = (as_json(answer) for answer in answers)
        assert first == second, f"seed {seed} differs:\n{document}"
        answer = answers[0]
        outcomes["errors"] += bool(answer.errors)
        outcomes["data"] += answer.data is not None
        outcomes["null_data"] += answer.data is None
    # The generator really reached the interesting cases.
    assert outcomes["errors"] >= 20, outcomes
    assert outcomes["null_data"] >= 10, outcomes
    assert outcomes["data"] >= DOCUMENTS // 2, outcomes
