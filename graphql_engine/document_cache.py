"""GraphQL engine: the parse and validation caches, bounded by bytes as well as by entries.

Clients send the same few small operations again and again, so parsing and validating each
text once pays. A large document is parsed and validated every time and then dropped: a client
sending distinct megabyte documents must not make the process hold their syntax trees after
it has gone. Each cache counts the UTF-8 bytes of the sources it keeps and evicts the least
recently used entries past either bound. A syntax tree (with its tokens, kept for error
locations) takes up to ~110 times its source, so the parse cache keeps the least source.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

V = TypeVar("V")

# Most operations are a few hundred bytes; a 16 KiB one is already unusually large.
MAX_ENTRY_BYTES: Final = 16 * 1024
MAX_ENTRIES: Final = 512
MAX_TOTAL_BYTES: Final = 1024 * 1024
# Up to ~14 MiB of syntax trees (dense documents); a few hundred typical operations.
MAX_PARSED_BYTES: Final = 128 * 1024


def source_bytes(text: str, cap: int) -> int | None:
    """The UTF-8 size of `text`, or None when it is certainly over `cap` (no encoding then)."""
    if len(text) > cap:  # a character is at least one byte
        return None
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class ByteBoundedCache(Generic[V]):
    """A least-recently-used map whose entries each declare their size in bytes."""

    max_entries: int = MAX_ENTRIES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_entry_bytes: int = MAX_ENTRY_BYTES
    # Lookups answered from the cache.
    hits: int = 0
    _entries: OrderedDict[Hashable, tuple[int, V]] = field(default_factory=OrderedDict)
    _total_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self._total_bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._entries))

    def get(self, key: Hashable) -> V | None:
        found = self._lookup(key)
        return None if found is None else found[1]

    def put(self, key: Hashable, size: int | None, value: V) -> None:
        """Keep `value` if `size` (None: too large to count) fits an entry."""
        if size is None or size > min(self.max_entry_bytes, self.max_total_bytes):
            return
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            self._total_bytes -= replaced[0]
        self._entries[key] = (size, value)
        self._total_bytes += size
        while len(self._entries) > self.max_entries or self._total_bytes > self.max_total_bytes:
            _, (evicted, _) = self._entries.popitem(last=False)
            self._total_bytes -= evicted

    def get_or_make(self, key: Hashable, size: int | None, make: Callable[[], V]) -> V:
        """The cached value for `key`, else `make()`, kept only if `size` fits an entry."""
        found = self._lookup(key)
        if found is not None:
            return found[1]
        value = make()
        self.put(key, size, value)
        return value

    def _lookup(self, key: Hashable) -> tuple[int, V] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return found


@dataclass
class DocumentCaches:
    """The parse cache and the validation cache (keyed by schema too)."""

    parsed: ByteBoundedCache[DocumentNode] = field(
        default_factory=lambda: ByteBoundedCache(max_total_bytes=MAX_PARSED_BYTES)
    )
    validated: ByteBoundedCache[list[GraphQLError]] = field(default_factory=ByteBoundedCache)


# One pair per process, as the memory they bound is the process's.
SHARED: Final = DocumentCaches()


class CachedParser(SchemaExtension):
    """Hands Strawberry a document it parsed before, and keeps what it parses now.

    The parse itself is Strawberry's, between this hook's two halves, so each document is
    parsed once per operation, and a syntax error arises in the operation itself, where every
    extension's post-processing (codes, masking) sees it: raised inside a hook, it would skip
    them. (Parsing here first made a document that fails to parse be parsed twice.)"""

    def __init__(self, cache: ByteBoundedCache[DocumentNode]) -> None:
        self.cache = cache

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query
        if query is None or context.graphql_document is not None:
            yield
            return
        key = (query, context.parse_options.get("max_tokens"))
        found = self.cache.get(key)
        context.graphql_document = found
        yield
        if found is None and context.graphql_document is not None:
            size = source_bytes(query, self.cache.max_entry_bytes)
            self.cache.put(key, size, context.graphql_document)


class CachedValidation(SchemaExtension):
    """Validates through the cache, keyed by the source text the document was parsed from
    (hashing a syntax tree walks all of it; a string hashes once)."""

    def __init__(self, cache: ByteBoundedCache[list[GraphQLError]]) -> None:
        self.cache = cache

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        schema = context.schema._schema
        document = context.graphql_document
        rules = context.validation_rules
        query = context.query
        if document is None or query is None:
            yield
            return
        key = (schema, query, rules)
        size = source_bytes(query, self.cache.max_entry_bytes)
        context.pre_execution_errors = self.cache.get_or_make(
            key, size, lambda: validate_document(schema, document, rules)
        )
        yield
