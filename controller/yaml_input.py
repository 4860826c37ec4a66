"""YAML written by people and by GitOps repositories, read defensively.

A release spec or a config file may be anything: other encodings, binary bytes,
deep nesting, an alias bomb (a few lines that expand to billions of nodes), keys
given twice. ``load_yaml`` returns plain data or raises ``YamlInputError`` with a
short message naming the problem and where it is; it never expands an alias bomb,
never recurses without bound, and never quotes more than a short excerpt.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

# A release spec is a few kilobytes; a megabyte is generous and bounds the parse time.
MAX_BYTES = 1 << 20
# Nodes after expanding aliases, and nesting depth: far above any real spec.
MAX_NODES = 100_000
MAX_DEPTH = 64
EXCERPT = 60


class YamlInputError(ValueError):
    """The text is not YAML that embrel will read; the message says why and where."""


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages stay short."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def decode(raw: bytes, max_bytes: int = MAX_BYTES) -> str:
    """Bytes as UTF-8 text (a UTF-8 byte-order mark is allowed), or a clear error."""
    if len(raw) > max_bytes:
        raise YamlInputError(f"{len(raw):,} bytes; at most {max_bytes:,} are read")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlInputError("UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlInputError(
            f"not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    return text


# libyaml's parser (PyYAML's C binding) is linear in the nesting depth and bounds it
# itself; the pure-Python scanner is quadratic in it (2 s for 1,000 nested "[").
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; SafeLoader reports it below
                break
            if duplicate:
                mark = key_node.start_mark
                raise YamlInputError(
                    f"key {excerpt(key)} is given twice in one mapping "
                    f"(line {mark.line + 1}, column {mark.column + 1})"
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _measure(root: Node, max_nodes: int, max_depth: int) -> None:
    """Refuse documents that expand past ``max_nodes`` or nest past ``max_depth``.

    Aliases make the node graph a DAG: sizes are memoised per node, so an alias bomb
    is measured in time proportional to its text, not to its expansion.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > max_depth:
            raise YamlInputError(f"nests deeper than {max_depth} levels")
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done and any(id(c) not in sizes for c in children):
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
            continue
        size = 1 + sum(sizes.get(id(c), 0) for c in children)
        if size > max_nodes:
            raise YamlInputError(
                f"expands to more than {max_nodes:,} values (YAML aliases?); refused"
            )
        sizes[id(node)] = size


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(
    text: str | bytes,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """One YAML document as plain data; ``YamlInputError`` for anything embrel won't read."""
    if isinstance(text, bytes):
        text = decode(text, max_bytes)
    elif len(text) > max_bytes:
        raise YamlInputError(f"{len(text):,} characters; at most {max_bytes:,} are read")
    if "\x00" in text:
        raise YamlInputError(f"holds a NUL character (offset {text.index(chr(0))})")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, max_nodes, max_depth)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own bound, far above ours
            raise YamlInputError(f"nests deeper than {max_depth} levels") from None
        raise YamlInputError(_yaml_problem(exc)) from None
    except RecursionError:  # the composer recurses per level, before _measure runs
        raise YamlInputError(f"nests deeper than {max_depth} levels") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"malformed YAML{where}: {problem[:200]}"


__all__ = ["MAX_BYTES", "YamlInputError", "decode", "excerpt", "load_yaml"]
