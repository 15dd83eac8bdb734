"""Resolver layer: the limits every operation must fit before it runs, as validation rules.

Depth, aliases and tokens use Strawberry's own limiters; the cost and directive limits are
small graphql-core rules of ours. Every refusal is a GraphQL error whose `extensions.code`
names the limit (`QUERY_TOO_DEEP`, `TOO_MANY_ALIASES`, `TOO_MANY_TOKENS`, `QUERY_TOO_COSTLY`,
`TOO_MANY_DIRECTIVES`), so a client can tell "too big" from "wrong".

Why not graphql-complexity: its list multiplier applies only to fields typed as lists (a Relay
connection is an object), it reads neither `last` nor variables, and its Strawberry extra pins
an old Strawberry. The rule below is what we need: cost = fields asked for, with each page's
lists multiplied by the page size the client asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from graphql import (
    ASTValidationRule,
    DirectiveNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from resolvers.connection import DEFAULT_PAGE, MAX_PAGE

QUERY_TOO_DEEP: Final = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES: Final = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS: Final = "TOO_MANY_TOKENS"
QUERY_TOO_COSTLY: Final = "QUERY_TOO_COSTLY"
TOO_MANY_DIRECTIVES: Final = "TOO_MANY_DIRECTIVES"

PAGE_ARGUMENTS: Final = ("first", "last")

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The size of operation the API accepts; each is a `CERTGRAPH_MAX_*` setting."""

    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2_000
    max_cost: int = 10_000
    max_directives: int = 50


def with_code(error: GraphQLError, code: str, **extra: Any) -> GraphQLError:
    """`error` with `extensions.code` (and `extra`) set; everything else kept."""
    return GraphQLError(
        error.message,
        error.nodes,
        error.source,
        error.positions,
        error.path,
        error.original_error,
        {**(error.extensions or {}), **extra, "code": code},
    )


def coded(rule: type[ASTValidationRule], code: str) -> type[ASTValidationRule]:
    """`rule`, with `code` on every error it reports.

    Strawberry's depth and alias rules do their whole check while being constructed and
    report through the context, so the context's error callback is wrapped for that time.
    """

    class Coded(rule):  # type: ignore[valid-type,misc]
        def __init__(self, context: ValidationContext) -> None:
            report = context.on_error
            context.on_error = lambda error: report(with_code(error, code))  # type: ignore[method-assign]
            try:
                super().__init__(context)
            finally:
                context.on_error = report  # type: ignore[method-assign]

        def report_error(self, error: GraphQLError) -> None:
            super().report_error(with_code(error, code))

    Coded.__name__ = Coded.__qualname__ = f"{rule.__name__}_{code}"
    return Coded


# ---- cost


def page_size(node: FieldNode, default: int) -> int:
    """The page a field asks for: a literal `first`/`last`, the largest page for a variable
    (its value is not known while validating, and validation results are cached), or
    `default`. Out-of-range values are the resolver's to refuse (BAD_USER_INPUT)."""
    for argument in node.arguments or ():
        if argument.name.value not in PAGE_ARGUMENTS:
            continue
        if isinstance(argument.value, IntValueNode):
            return max(0, min(int(argument.value.value), MAX_PAGE))
        if isinstance(argument.value, VariableNode):
            return MAX_PAGE
    return default


def cost_rule(max_cost: int, default_page: int = DEFAULT_PAGE) -> type[ValidationRule]:
    """Refuse operations whose cost passes `max_cost` (QUERY_TOO_COSTLY).

    Every field costs 1 plus its selections. Below a field that takes `first`/`last`, each
    list it returns (`nodes`, `edges`) costs its page size times its own cost; `totalCount`
    and `pageInfo` do not grow with the page. Fragments count wherever they are spread.
    """

    class CostLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: object) -> None:
            root = self.context.schema.get_root_type(node.operation)
            cost = self.selections(node.selection_set, root, 1, frozenset())
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"The operation costs {cost}; at most {max_cost} is allowed. Ask for "
                        "smaller pages (`first`/`last`) or fewer fields.",
                        node,
                        extensions={"code": QUERY_TOO_COSTLY, "cost": cost, "maxCost": max_cost},
                    )
                )

        def selections(
            self,
            selection_set: SelectionSetNode | None,
            parent: GraphQLNamedType | None,
            page: int,
            spread: frozenset[str],
        ) -> int:
            if selection_set is None:
                return 0
            total = 0
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    total += self.field(selection, parent, page, spread)
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    typed = (
                        self.context.schema.get_type(condition.name.value) if condition else parent
                    )
                    total += self.selections(selection.selection_set, typed, page, spread)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.context.get_fragment(name)
                    # A cycle is NoFragmentCyclesRule's to report: count a fragment once per path.
                    if fragment is None or name in spread:
                        continue
                    typed = self.context.schema.get_type(fragment.type_condition.name.value)
                    total += self.selections(fragment.selection_set, typed, page, spread | {name})
            return total

        def field(
            self,
            node: FieldNode,
            parent: GraphQLNamedType | None,
            page: int,
            spread: frozenset[str],
        ) -> int:
            definition = field_definition(self.context, parent, node.name.value)
            if definition is None:
                # An unknown field (FieldsOnCorrectTypeRule reports it): count what it asks for.
                return 1 + self.selections(node.selection_set, None, 1, spread)
            paged = any(argument in definition.args for argument in PAGE_ARGUMENTS)
            inner = page_size(node, default_page) if paged else 1
            cost = 1 + self.selections(
                node.selection_set, get_named_type(definition.type), inner, spread
            )
            return cost * page if is_list(definition) else cost

    return CostLimit


def field_definition(
    context: ValidationContext, parent: GraphQLNamedType | None, name: str
) -> GraphQLField | None:
    if name == "__typename":
        return TypeNameMetaFieldDef
    if parent is not None and parent is context.schema.query_type:
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def is_list(definition: GraphQLField) -> bool:
    type_ = definition.type
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


# ---- directives


def directive_rule(max_directives: int) -> type[ValidationRule]:
    """Refuse documents with more than `max_directives` directives (TOO_MANY_DIRECTIVES):
    a client needs a few `@include`/`@skip`; thousands are an attack on the validator."""

    class DirectiveLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_directive(self, node: DirectiveNode, *_: object) -> None:
            self.count += 1
            # Reported at once: with a flood of directives, the other rules' errors would
            # reach graphql-core's error cap (100) and abort validation before the end.
            if self.count == max_directives + 1:
                self.report_error(
                    GraphQLError(
                        f"The document has more than {max_directives} directives.",
                        node,
                        extensions={"code": TOO_MANY_DIRECTIVES},
                    )
                )

    return DirectiveLimit


# ---- tokens


class TokenLimiter(MaxTokensLimiter):
    """Strawberry's token limit; the parser's refusal gets the TOO_MANY_TOKENS code."""

    def on_operation(self):  # type: ignore[no-untyped-def]
        yield from super().on_operation()
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is None or not errors:
            return
        marker = f"more than {self.max_token_count} tokens"
        result.errors = [
            with_code(error, TOO_MANY_TOKENS) if marker in error.message else error
            for error in errors
        ]


# ---- as schema extensions


def limit_extensions(limits: QueryLimits) -> list[ExtensionFactory]:
    """The limits as extension factories (Strawberry builds fresh instances per operation).

    The rule classes are built once, here: Strawberry's limiters create a new rule class per
    instance, and `ValidationCache` keys on the rule classes, so building them per operation
    would make every validation a cache miss.
    """
    rules: list[type[ASTValidationRule]] = [
        *(
            coded(rule, QUERY_TOO_DEEP)
            for rule in QueryDepthLimiter(max_depth=limits.max_depth).validation_rules
        ),
        *(
            coded(rule, TOO_MANY_ALIASES)
            for rule in MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules
        ),
        cost_rule(limits.max_cost),
        directive_rule(limits.max_directives),
    ]
    return [
        lambda: AddValidationRules(rules),
        lambda: TokenLimiter(max_token_count=limits.max_tokens),
    ]
