"""GraphQL engine: the size of a document's operations (depth, aliases, cost) in linear time.

A fragment spread n times counts n times, as it would be executed: `fragment D1 { ...D0 ...D0 }`
doubles D0. Walking every spread path would take time exponential in the number of fragments
(`D22` alone is 4 million paths), so each fragment is measured once, by name, and its size is
reused wherever it is spread. The work is one visit per selection set of the document.

Cost is what `graphql_engine.limits` charges: every field costs 1 plus its selections, and below a
field that takes `first`/`last`, each list it returns (`nodes`, `edges`) costs the page size
times its own cost. A fragment's cost thus depends on the page it is spread under; it is kept
as `fixed + per_page * page`, which is known before the page is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

PAGE_ARGUMENTS: Final = ("first", "last")


@dataclass(frozen=True, slots=True)
class Size:
    """The size of a selection set.

    `depth` counts the levels of fields that have selections (introspection fields are not
    counted, as in Strawberry's QueryDepthLimiter); `aliases` the aliased fields; its cost is
    `fixed + per_page * page`, `page` being the page size of the field it is selected under.
    """

    depth: int = 0
    aliases: int = 0
    fixed: int = 0
    per_page: int = 0

    def cost(self, page: int) -> int:
        return self.fixed + self.per_page * page

    def __add__(self, other: Size) -> Size:
        return Size(
            max(self.depth, other.depth),
            self.aliases + other.aliases,
            self.fixed + other.fixed,
            self.per_page + other.per_page,
        )


NOTHING: Final = Size()


def page_size(node: FieldNode, default: int, largest: int) -> int:
    """The page a field asks for: a literal `first`/`last`, the largest page for a variable
    (its value is not known while validating, and validation results are cached), or
    `default`. Out-of-range values are the resolver's to refuse (BAD_USER_INPUT)."""
    for argument in node.arguments or ():
        if argument.name.value not in PAGE_ARGUMENTS:
            continue
        if isinstance(argument.value, IntValueNode):
            return max(0, min(int(argument.value.value), largest))
        if isinstance(argument.value, VariableNode):
            return largest
    return default


class DocumentMeasure:
    """Measures the operations of one document; each fragment is measured once.

    Each selection set of the document is visited at most once. A fragment cycle
    (NoFragmentCyclesRule reports it) counts as empty where it closes.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        default_page: int,
        largest_page: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.default_page = default_page
        self.largest_page = largest_page
        self.sizes: dict[str, Size] = {}
        self.measuring: set[str] = set()

    def operation(self, node: OperationDefinitionNode) -> Size:
        return self.selections(node.selection_set, self.schema.get_root_type(node.operation))

    def selections(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> Size:
        total = NOTHING
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                typed = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, typed)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> Size:
        known = self.sizes.get(name)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None or name in self.measuring:
            return NOTHING
        self.measuring.add(name)
        typed = self.schema.get_type(definition.type_condition.name.value)
        size = self.sizes[name] = self.selections(definition.selection_set, typed)
        self.measuring.discard(name)
        return size

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Size:
        definition = field_definition(self.schema, parent, node.name.value)
        selection_set = node.selection_set
        # An unknown field (FieldsOnCorrectTypeRule reports it) counts what it asks for.
        typed = get_named_type(definition.type) if definition else None
        inner = self.selections(selection_set, typed) if selection_set else NOTHING
        paged = definition is not None and any(a in definition.args for a in PAGE_ARGUMENTS)
        page = page_size(node, self.default_page, self.largest_page) if paged else 1
        is_list = definition is not None and returns_list(definition)
        cost = 1 + inner.cost(page)
        has_levels = selection_set is not None and not node.name.value.startswith("__")
        return Size(
            depth=1 + inner.depth if has_levels else 0,
            aliases=inner.aliases + (1 if node.alias else 0),
            fixed=0 if is_list else cost,
            per_page=cost if is_list else 0,
        )


def field_definition(
    schema: GraphQLSchema, parent: GraphQLNamedType | None, name: str
) -> GraphQLField | None:
    if name == "__typename":
        return TypeNameMetaFieldDef
    if parent is not None and parent is schema.query_type:
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def returns_list(definition: GraphQLField) -> bool:
    type_ = definition.type
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)
