"""GraphQL engine: Strawberry's executor with a fast path for plain fields.

Most of a console page is fields read straight off an object (`name`, `status`, `events { at }`):
about 3,500 of them for 50 certificates. graphql-core spends ~8 µs on each, building a `Path`
and a resolve-info object that such a field never looks at, then completing the value through
its generic, recursive `complete_value`. Here each selection set's *plain* fields are found once
per request: no resolver of ours, no arguments, and a scalar or enum type, a list of them, or an
object (or list of objects) whose own selection is all plain. Each is then read and serialized
in one step. Anything unusual (a null for a non-null field, a value that will not serialize, a
directive on a list, deferred delivery) makes the whole selection set go the regular way, so
errors, their paths and null propagation are exactly graphql-core's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    is_leaf_type,
)
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

# A field whose Strawberry metadata names an attribute under this key may find its value in
# that attribute of the object already (loaded by a parent; None when not): it is read then
# like a plain field, and the field's resolver must return the attribute when it is set.
PREFETCHED_IN = "prefetched_in"

# Kinds of plain fields.
LEAF, LEAVES, OBJECT, OBJECTS = range(4)
# A plain field: (response key, kind, read it off the source, complete the value read,
# non-null?, non-null items?). `complete` serializes a leaf, or runs an object's selection.
Plain = tuple[str, int, Callable[[Any], Any], Callable[[Any], Any], bool, bool]
# Runs an object's plain fields: their values in the client's order; `_Irregular` if any is odd.
Runner = Callable[[Any], dict[str, Any]]
# How to execute one selection set: its plain fields, the others (the regular way), and the
# runner of the plain ones.
Plan = tuple[list[Plain], dict[str, Any], Runner]


class _Irregular(Exception):
    """Something the regular executor must handle (and report, with its path)."""


def _unwrap(type_: GraphQLOutputType) -> tuple[GraphQLOutputType, bool]:
    if isinstance(type_, GraphQLNonNull):
        return type_.of_type, True
    return type_, False


def _prefetched_in(field_def: GraphQLField) -> str | None:
    """The attribute a field's value may be in already (its metadata's `PREFETCHED_IN`)."""
    strawberry_field = (field_def.extensions or {}).get("strawberry-definition")
    metadata = getattr(strawberry_field, "metadata", None) or {}
    found = metadata.get(PREFETCHED_IN)
    return found if isinstance(found, str) else None


def _reader(field_def: GraphQLField) -> Callable[[Any], Any]:
    """How to read the field off its source: the attribute itself, as Strawberry would."""
    resolve = field_def.resolve
    assert resolve is not None
    prefetched = _prefetched_in(field_def)
    if prefetched is not None:
        # None when nothing was prefetched: the object then goes the regular way.
        return attrgetter(prefetched)
    strawberry_field = (field_def.extensions or {}).get("strawberry-definition")
    if strawberry_field is not None and strawberry_field.default_resolver is getattr:
        return attrgetter(strawberry_field.python_name)
    return lambda source: resolve(source, None)


# Per schema type, for as long as the schema lives: subscriptions plan each event afresh.
_serializers: WeakKeyDictionary[GraphQLLeafType, Callable[[Any], Any]] = WeakKeyDictionary()


def _serializer(leaf_type: GraphQLLeafType) -> Callable[[Any], Any]:
    found = _serializers.get(leaf_type)
    if found is None:
        found = _serializers[leaf_type] = _make_serializer(leaf_type)
    return found


def _make_serializer(leaf_type: GraphQLLeafType) -> Callable[[Any], Any]:
    """`coerce_output_value`, with enum members looked up instead of searched for, and UTC
    datetimes formatted by orjson (the same text as `isoformat`, in half the time)."""
    coerce = leaf_type.coerce_output_value
    if leaf_type.name == "DateTime":
        return _datetime_serializer(coerce)
    if not isinstance(leaf_type, GraphQLEnumType):
        return coerce
    # Our enums are StrEnums: a member hashes and compares as its value.
    names = {value.value: name for name, value in leaf_type.values.items()}

    def serialize(value: Any) -> Any:
        try:
            return names[value]
        except (KeyError, TypeError):
            return coerce(value)

    return serialize


def _datetime_serializer(coerce: Callable[[Any], Any]) -> Callable[[Any], Any]:
    dumps = orjson.dumps

    def serialize(value: Any) -> Any:
        # orjson writes RFC 3339, which for an offset of whole minutes (UTC's) is isoformat's.
        if value.__class__ is datetime and value.tzinfo is UTC:
            return dumps(value)[1:-1].decode()
        return coerce(value)

    return serialize


def _is_plain_resolver(field_def: GraphQLField | None, node: Any) -> bool:
    # Only Strawberry's resolver of a field with no resolver, permission or extension of
    # ours: it reads the attribute and never looks at `info`. Or a resolver of ours whose
    # value may be prefetched, read the same way.
    if field_def is None or field_def.args or node.arguments:
        return False
    return (
        getattr(field_def.resolve, "__name__", "") == "_get_basic_result"
        or _prefetched_in(field_def) is not None
    )


def _checks_type_itself(object_type: GraphQLObjectType) -> bool:
    """Whether the type's `is_type_of` (if any) is Strawberry's, which never reads `info`."""
    check = object_type.is_type_of
    return check is None or getattr(check, "__module__", "").startswith("strawberry.")


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    # The off switch (`CERTGRAPH_FAST_EXECUTOR=0`, see `server.http.schema.build_schema`): every
    # field then goes graphql-core's regular way, which answers the same (tests prove it).
    fast = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # id(grouped field set) -> (the set, kept alive so its id stays unique; its plan)
        self._plans: dict[int, tuple[object, Plan]] = {}

    # ---- planning (once per selection set and request)

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> Plan:
        cached = self._plans.get(id(grouped_field_set))
        if cached is not None and cached[0] is grouped_field_set:
            return cached[1]
        plain: list[Plain] = []
        others: dict[str, Any] = {}
        for response_name, field_details_list in grouped_field_set.items():
            node = field_details_list[0].node
            field_def = self.schema.get_field(parent_type, node.name.value)
            found = (
                self._plain(response_name, field_def, field_details_list)
                if field_def is not None and _is_plain_resolver(field_def, node)
                else None
            )
            if found is None:
                others[response_name] = field_details_list
            else:
                plain.append(found)
        plan = (plain, others, _runner(plain))
        self._plans[id(grouped_field_set)] = (grouped_field_set, plan)
        return plan

    def _plain(
        self, response_name: str, field_def: GraphQLField, field_details_list: Any
    ) -> Plain | None:
        type_, non_null = _unwrap(field_def.type)
        kind = LEAF
        item_non_null = False
        if isinstance(type_, GraphQLList):
            # A directive on a list field may be @stream: that list goes the regular way.
            if any(details.node.directives for details in field_details_list):
                return None
            type_, item_non_null = _unwrap(type_.of_type)
            kind = LEAVES
        read = _reader(field_def)
        if is_leaf_type(type_):
            return response_name, kind, read, _serializer(type_), non_null, item_non_null
        if isinstance(type_, GraphQLObjectType):
            complete = self._object_completer(type_, field_details_list)
            if complete is not None:
                kind = OBJECTS if kind == LEAVES else OBJECT
                return response_name, kind, read, complete, non_null, item_non_null
        return None

    def _object_completer(
        self, object_type: GraphQLObjectType, field_details_list: Any
    ) -> Callable[[Any], Any] | None:
        """Runs an object's selection when it is all plain, else None."""
        if not _checks_type_itself(object_type):
            return None
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(
            object_type, field_details_list
        )
        if new_defer_usages:
            return None
        _, others, run = self._plan(object_type, grouped_field_set)
        if others:
            return None
        is_type_of = object_type.is_type_of
        if is_type_of is None:
            return run

        def complete(value: Any) -> Any:
            if not is_type_of(value, None):  # type: ignore[arg-type]
                raise _Irregular
            return run(value)

        return complete

    # ---- running

    def _fast_allowed(self, position_context: Any) -> bool:
        # Strawberry passes a middleware manager; it is empty unless an extension of ours
        # wraps resolvers, and then every field goes the regular way.
        middleware = self.middleware_manager
        return (
            self.fast
            and position_context is None
            and not (middleware is not None and middleware.middlewares)
        )

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if not self._fast_allowed(position_context):
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        plain, others, run = self._plan(parent_type, grouped_field_set)
        if not plain:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        try:
            values = run(source_value)
        except Exception:
            # The regular executor reports the error with its path and propagates the null.
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        if not others:
            return values
        return self._merge(parent_type, source_value, path, grouped_field_set, others, values)

    def _merge(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        others: dict[str, Any],
        values: dict[str, Any],
    ) -> Any:
        """The other fields the regular way, then all of them in the client's order."""
        completed = super().execute_fields(parent_type, source_value, path, others, None)

        def ordered(results: dict[str, Any]) -> dict[str, Any]:
            merged = {}
            for name in grouped_field_set:
                if name in values:
                    merged[name] = values[name]
                elif name in results:
                    merged[name] = results[name]
            return merged

        if isinstance(completed, dict):
            return ordered(completed)

        async def merge_later() -> dict[str, Any]:
            return ordered(await completed)

        return merge_later()

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: Any,
        info: Any,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """A list of objects from a resolver of ours (say `events`), plain ones in one go."""
        item_type, item_non_null = _unwrap(return_type.of_type)
        if (
            isinstance(result, list | tuple)
            and isinstance(item_type, GraphQLObjectType)
            and self._fast_allowed(position_context)
            and not any(details.node.directives for details in field_details_list)
        ):
            complete = self._object_completer(item_type, field_details_list)
            if complete is not None:
                try:
                    return _complete_items(result, complete, item_non_null)
                except Exception:
                    pass
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )


# ---- runners: the plain fields of a selection read and completed in one loop
#
# The plan is computed once per selection set and request; running it is a loop over tuples
# with no `Path`, no resolve info and no recursion into graphql-core. (Generating straight-line
# code per shape was measured at only 8-10% faster than this loop, not worth `exec`.)


def _runner(plain: list[Plain]) -> Runner:
    steps = tuple(
        (name, kind in (LEAVES, OBJECTS), read, complete, non_null, item_non_null)
        for name, kind, read, complete, non_null, item_non_null in plain
    )

    def run(source: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, is_list, read, complete, non_null, item_non_null in steps:
            value = read(source)
            if value is None:
                if non_null:
                    raise _Irregular
                values[name] = None
            elif is_list:
                values[name] = _complete_items(value, complete, item_non_null)
            else:
                completed = complete(value)
                if completed is None or completed is Undefined:
                    raise _Irregular
                values[name] = completed
        return values

    return run


def _complete_items(value: Any, complete: Callable[[Any], Any], non_null: bool) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _Irregular
    items: list[Any] = []
    for item in value:
        if item is None:
            if non_null:
                raise _Irregular
            items.append(None)
            continue
        completed = complete(item)
        if completed is None or completed is Undefined:
            raise _Irregular
        items.append(completed)
    return items
