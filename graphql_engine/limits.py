"""GraphQL engine: the limits every operation must fit before it runs, as validation rules.

Every refusal is a GraphQL error whose `extensions.code` names the limit (`QUERY_TOO_DEEP`,
`TOO_MANY_ALIASES`, `TOO_MANY_TOKENS`, `QUERY_TOO_COSTLY`, `TOO_MANY_DIRECTIVES`,
`TOO_MANY_FIELD_COMPARISONS`), so a client can tell "too big" from "wrong".

Depth, aliases and cost are measured together by `graphql_engine.measure`, in time linear in the
document (Strawberry's depth and alias limiters walk every fragment path: exponential time for
a document of nested fragment spreads). A document over a limit is refused before graphql-core's
own rules look at it: what they would find no longer matters.

Of those rules, only OverlappingFieldsCanBeMerged does more than linear work: it compares
same-named fields pairwise, into their subselections, and fragments spread together pairwise.
It runs on a budget of comparisons (`merge_rule`), so no document within the token limit can
make it work long.

Why not graphql-complexity for the cost: its list multiplier applies only to fields typed as
lists (a Relay connection is an object), it reads neither `last` nor variables, and its
Strawberry extra pins an old Strawberry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from graphql import (
    ASTValidationRule,
    DirectiveNode,
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import MaxTokensLimiter, SchemaExtension

from graphql_engine.inputs import InputBounds, LiteralBounds
from graphql_engine.measure import DocumentMeasure

QUERY_TOO_DEEP: Final = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES: Final = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS: Final = "TOO_MANY_TOKENS"
QUERY_TOO_COSTLY: Final = "QUERY_TOO_COSTLY"
TOO_MANY_DIRECTIVES: Final = "TOO_MANY_DIRECTIVES"
TOO_MANY_FIELD_COMPARISONS: Final = "TOO_MANY_FIELD_COMPARISONS"

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The size of operation the API accepts; each is a `CERTGRAPH_MAX_*` setting."""

    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2_000
    max_cost: int = 10_000
    max_directives: int = 50
    max_field_comparisons: int = 2_500
    # What a list field's `first`/`last` gives when not asked for, and the most it may ask:
    # the cost of a page (the API's own page sizes, passed in by the server).
    default_page: int = 20
    max_page: int = 100


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


class Refused(ValidationAbortedError):
    """A limit's refusal, raised to stop validation: graphql-core keeps it as the last error
    (`validate` documents aborting). The size limits raise it on entering the document, before
    any rule has visited a selection set; the merge rule when its budget runs out."""


# ---- depth, aliases and cost


def size_rule(limits: QueryLimits) -> type[ValidationRule]:
    """Refuse operations deeper than `max_depth` (QUERY_TOO_DEEP), documents with more than
    `max_aliases` aliased fields (TOO_MANY_ALIASES, counted wherever a fragment is spread) and
    operations costing more than `max_cost` (QUERY_TOO_COSTLY)."""

    class SizeLimit(ValidationRule):
        def enter_document(self, node: DocumentNode, *_: object) -> None:
            fragments = {
                definition.name.value: definition
                for definition in node.definitions
                if isinstance(definition, FragmentDefinitionNode)
            }
            measure = DocumentMeasure(
                self.context.schema, fragments, limits.default_page, limits.max_page
            )
            errors: list[GraphQLError] = []
            aliases = 0
            for definition in node.definitions:
                if not isinstance(definition, OperationDefinitionNode):
                    continue
                size = measure.operation(definition)
                aliases += size.aliases
                name = definition.name.value if definition.name else "anonymous"
                if size.depth > limits.max_depth:
                    errors.append(
                        GraphQLError(
                            f"'{name}' exceeds maximum operation depth of {limits.max_depth}",
                            definition,
                            extensions={"code": QUERY_TOO_DEEP},
                        )
                    )
                cost = size.cost(1)
                if cost > limits.max_cost:
                    errors.append(
                        GraphQLError(
                            f"The operation costs {cost}; at most {limits.max_cost} is allowed. "
                            "Ask for smaller pages (`first`/`last`) or fewer fields.",
                            definition,
                            extensions={
                                "code": QUERY_TOO_COSTLY,
                                "cost": cost,
                                "maxCost": limits.max_cost,
                            },
                        )
                    )
            if aliases > limits.max_aliases:
                errors.append(
                    GraphQLError(
                        f"{aliases} aliases found. Allowed: {limits.max_aliases}",
                        extensions={"code": TOO_MANY_ALIASES},
                    )
                )
            if errors:
                *reported, last = errors
                for error in reported:
                    self.report_error(error)
                raise Refused(last.message, last.nodes, extensions=last.extensions)

    return SizeLimit


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


# ---- field merging


def merge_rule(max_comparisons: int) -> type[ValidationRule]:
    """graphql-core's OverlappingFieldsCanBeMergedRule, refusing (TOO_MANY_FIELD_COMPARISONS)
    a document that needs more than `max_comparisons` comparisons of fields.

    The rule compares every two same-named fields of a selection set, with their subselections,
    and every two fragments spread together: quadratic in the document and multiplied across
    nesting levels (284 x `viewer { tenant { name } }` is 120,000 comparisons, 3 s). graphql-core
    meters that work with a complexity budget (2 per pair of fields compared, 1 or 2 per fragment
    or name looked at; collecting a selection set's fields is linear and free) and aborts when it
    runs out. Its default, 500,000, lets one document take seconds; this rule starts with
    `2 * max_comparisons` (graphql-core's own conversion). Below it, the rule is unchanged.
    """
    budget = 2 * max_comparisons

    class BoundedMerge(OverlappingFieldsCanBeMergedRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.rule_context.remaining_complexity_budget = budget

        def enter_selection_set(
            self, selection_set: SelectionSetNode, key: Any, parent: Any, *args: Any
        ) -> None:
            try:
                super().enter_selection_set(selection_set, key, parent, *args)
            except ValidationAbortedError:
                if self.rule_context.remaining_complexity_budget >= 0:
                    raise  # the error cap, not the budget
                raise Refused(
                    f"Checking that the fields of this document can be merged takes more than "
                    f"{max_comparisons} comparisons. Select each field once per selection set "
                    "and spread fewer fragments together.",
                    selection_set,
                    extensions={"code": TOO_MANY_FIELD_COMPARISONS},
                ) from None

    return BoundedMerge


class LimitRules(SchemaExtension):
    """Adds the limit rules to an operation's validation rules, and puts `merge` in the place of
    graphql-core's overlap rule."""

    def __init__(
        self, rules: list[type[ASTValidationRule]], merge: type[ASTValidationRule]
    ) -> None:
        self.rules = rules
        self.merge = merge

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        standard = (
            self.merge if rule is OverlappingFieldsCanBeMergedRule else rule
            for rule in context.validation_rules
        )
        context.validation_rules = (*standard, *self.rules)
        yield


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

    The rule classes are built once, here: `ValidationCache` keys on the rule classes, so
    building them per operation would make every validation a cache miss.
    """
    rules: list[type[ASTValidationRule]] = [
        size_rule(limits),
        directive_rule(limits.max_directives),
        LiteralBounds,
    ]
    merge = merge_rule(limits.max_field_comparisons)
    return [
        lambda: LimitRules(rules, merge),
        lambda: TokenLimiter(max_token_count=limits.max_tokens),
        InputBounds,
    ]
