"""Fuzzing the release spec and the controller config: whatever the bytes, a SpecError
(ConfigError) naming the problem, or a valid release; never another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from controller.config import ControllerConfig, load_config
from controller.errors import ConfigError, SpecError
from controller.spec import EmbeddingRelease, parse_release, release_from_dict
from tests.fuzz.settings import clear_error_or_result, fuzz

VALID: dict[str, Any] = {
    "apiVersion": "embrel.dev/v1alpha1",
    "kind": "EmbeddingRelease",
    "metadata": {"name": "products", "namespace": "shop"},
    "spec": {
        "alias": "products",
        "version": "v2",
        "model": {"name": "minilm", "revision": "abc"},
        "milvus": {"uri": "./milvus.db"},
        "collection": {
            "dimension": 8,
            "metric": "COSINE",
            "index": {"type": "HNSW", "params": {"M": 16, "efConstruction": 200}},
            "fields": [{"name": "title", "type": "VARCHAR", "maxLength": 64}],
        },
        "source": {"files": {"uri": "data/*.parquet", "idField": "id", "vectorField": "v"}},
        "validation": {
            "goldenSet": {"uri": "golden.parquet", "k": 10, "minRecall": 0.8},
            "queries": {"uri": "q.parquet", "sample": 100},
            "gates": {"minOverlapWithLive": {"k": 10, "min": 0.5}, "maxRowCountChange": 0.1},
            "searchParams": {"ef": 64},
            "seed": 3,
        },
        "monitoring": {"interval": "5m", "thresholds": {"maxMmd": 0.05}},
        "promotion": {"mode": "manual"},
        "retention": {"keepPrevious": 2, "keepLoaded": 1},
    },
}
VALID_TEXT = yaml.safe_dump(VALID, sort_keys=False)

CONFIG: dict[str, Any] = {
    "stateDir": ".embrel",
    "milvus": {"timeoutSeconds": 60.0, "retryAttempts": 5, "retryMaxWaitSeconds": 30.0},
    "build": {"batchSize": 5000, "indexTimeoutSeconds": 3600.0},
    "log": {"level": "INFO", "format": "text"},
}

HUGE = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**100, 1e308, -1e308, 1e-320])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=2000),
    st.sampled_from(["", " ", "HNSW", "VARCHAR", "../../etc/passwd", "5m", "-1", "0x10"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a nested dict/list, the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, child in items:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Drop, retype, duplicate or deepen one field (a few times over)."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        where = paths(doc)
        if not where:
            break
        path = data.draw(st.sampled_from(where), label="path")
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = data.draw(st.sampled_from(["drop", "retype", "wrap", "deep", "copy"]), label="op")
        if op == "drop":
            del parent[key]
        elif op == "retype":
            parent[key] = data.draw(values, label="value")
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "deep":
            parent[key] = deep(data.draw(st.integers(10, 200), label="depth"))
        elif isinstance(parent, dict):  # copy: the same value under a new key
            parent[data.draw(st.text(max_size=12), label="new key")] = copy.deepcopy(parent[key])
    return doc


def dump(doc: Any) -> str | None:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError, RecursionError):
        return None  # not expressible as YAML (a surrogate): nothing to feed in


def assert_spec_result(result: EmbeddingRelease | Exception) -> None:
    assert isinstance(result, EmbeddingRelease | SpecError), type(result)
    if isinstance(result, SpecError):
        assert result.problems, "a SpecError names at least one problem"


@fuzz
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(raw: bytes) -> None:
    assert_spec_result(clear_error_or_result(lambda: parse_release(raw, "fuzz.yaml")))


@fuzz
@given(st.data())
def test_byte_mutations_of_a_valid_spec(data: st.DataObject) -> None:
    raw = bytearray(VALID_TEXT.encode())
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        at = data.draw(st.integers(0, len(raw)), label="at")
        edit = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="edit")
        if edit == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        elif at < len(raw):
            if edit == "flip":
                raw[at] = data.draw(st.integers(0, 255), label="byte")
            else:
                del raw[at]
    assert_spec_result(clear_error_or_result(lambda: parse_release(bytes(raw), "fuzz.yaml")))


@fuzz
@given(st.data())
def test_structure_mutations_of_a_valid_spec(data: st.DataObject) -> None:
    doc = mutate(VALID, data)
    text = dump(doc)
    if text is not None:
        assert_spec_result(clear_error_or_result(lambda: parse_release(text, "fuzz.yaml")))
    assert_spec_result(clear_error_or_result(lambda: release_from_dict(doc, "fuzz.yaml")))


@fuzz
@given(st.data())
def test_duplicated_lines_of_a_valid_spec(data: st.DataObject) -> None:
    """A repeated line is a duplicate key (refused) or a changed structure."""
    lines = VALID_TEXT.splitlines()
    for _ in range(data.draw(st.integers(1, 3), label="copies")):
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        lines.insert(data.draw(st.integers(0, len(lines)), label="to"), lines[i])
    text = "\n".join(lines)
    assert_spec_result(clear_error_or_result(lambda: parse_release(text, "fuzz.yaml")))


def test_the_unmutated_spec_is_valid() -> None:
    """The mutations start from a spec that parses: otherwise they test nothing."""
    assert parse_release(VALID_TEXT).spec.version == "v2"


# --- controller config ------------------------------------------------------------


def assert_config_result(result: ControllerConfig | Exception) -> None:
    assert isinstance(result, ControllerConfig | ConfigError), type(result)


@fuzz
@given(raw=st.binary(max_size=2048))
def test_config_from_arbitrary_bytes(raw: bytes, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(raw)
    assert_config_result(clear_error_or_result(lambda: load_config(path)))


@fuzz
@given(data=st.data())
def test_config_structure_mutations(data: st.DataObject, tmp_path: Path) -> None:
    text = dump(mutate(CONFIG, data))
    if text is None:
        return
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    assert_config_result(clear_error_or_result(lambda: load_config(path)))
