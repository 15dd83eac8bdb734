"""Dependencies point one way: server -> resolvers, graphql_engine -> domain; each layer
imports only what an allow-list names (beside the standard library and itself)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STANDARD = set(sys.stdlib_module_names) | {"__future__"}
ALLOWED = {
    # Plain Python: the rules know no framework.
    "domain": set(),
    # Translation between GraphQL types and the domain: Strawberry's types and the domain.
    "resolvers": {"strawberry", "domain"},
    # How documents are limited, cached and executed: Strawberry and graphql-core internals.
    "graphql_engine": {"strawberry", "graphql", "orjson", "domain"},
}
# graphql-core names a resolver may use: the spec's error type, which Strawberry reports as is.
RESOLVER_GRAPHQL_NAMES = {"GraphQLError"}


def imports(path: Path) -> list[tuple[str, set[str]]]:
    """(module root, names imported from it) for each absolute import of the file."""
    found: list[tuple[str, set[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], set()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], {alias.name for alias in node.names}))
    return found


def offences(layer: str) -> dict[str, list[str]]:
    allowed = STANDARD | ALLOWED[layer] | {layer}
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = sorted(
            root
            for root, names in imports(path)
            if root not in allowed
            and not (layer == "resolvers" and root == "graphql" and names <= RESOLVER_GRAPHQL_NAMES)
        )
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_its_allow_list_names(layer: str) -> None:
    assert offences(layer) == {}


def test_the_resolvers_mark_prefetched_fields_with_the_key_the_engine_reads() -> None:
    from graphql_engine import execution
    from resolvers import fields

    assert fields.PREFETCHED_IN == execution.PREFETCHED_IN
