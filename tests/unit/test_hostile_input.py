"""Specs written by mistake or by an attacker: a clear SpecError, never anything else.

Each case was a traceback, a hang, or a silent acceptance before: non-UTF-8 and
UTF-16 files, an alias bomb, deep nesting, duplicate keys, a NUL in the namespace,
namespaces that made two tracks share one state file, credentials inside the URI,
index parameters Milvus would reject (or ignore) only after the build.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from pymilvus import MilvusException

from controller.errors import MilvusRejected, MilvusUnavailable, SpecError
from controller.milvus import _translated
from controller.spec import collection_name, parse_release, redact_uri, release_from_dict

VALID: dict[str, Any] = {
    "apiVersion": "embrel.dev/v1alpha1",
    "kind": "EmbeddingRelease",
    "metadata": {"name": "products", "namespace": "search"},
    "spec": {
        "alias": "products",
        "version": "v1",
        "model": {"name": "m"},
        "milvus": {"uri": "http://127.0.0.1:19530"},
        "collection": {"dimension": 8},
        "source": {"files": {"uri": "v1.parquet", "idField": "id", "vectorField": "v"}},
    },
}


def with_spec(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = doc
        for key in path:
            node = node[key]
        node[last] = value
    return doc


def refused(doc: dict[str, Any] | str | bytes) -> SpecError:
    with pytest.raises(SpecError) as info:
        if isinstance(doc, dict):
            release_from_dict(doc, "release.yaml")
        else:
            parse_release(doc, "release.yaml")
    return info.value


def test_the_valid_base_parses() -> None:
    assert parse_release(yaml.safe_dump(VALID)).spec.alias == "products"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'x: "\xff"\n', "not UTF-8 text (byte 4"),
        (yaml.safe_dump(VALID).encode("utf-16"), "UTF-16 text"),
        (b"kind: EmbeddingRelease\x00\n", "NUL character"),
        (b"a: 1\nb: 2\na: 3\n", "key 'a' is given twice in one mapping (line 3"),
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 64 levels"),
        (b"a:\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 200)), "nests deeper"),
        (b"x: " + b"y" * (2 << 20), "at most 1,048,576 are read"),
        (b"a: [1, 2\n", "malformed YAML (line 2, column 1)"),
    ],
)
def test_unreadable_files_are_spec_errors(raw: bytes, expected: str) -> None:
    assert expected in str(refused(raw))


def test_an_alias_bomb_is_refused_at_once_and_quoted_briefly() -> None:
    levels = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    for field in ("kind", "metric"):
        text = "\n".join([*levels, f"{field}: *i"])
        started = time.monotonic()
        error = refused(text)
        assert time.monotonic() - started < 2
        assert "expands to more than 100,000 values" in str(error)
        assert len(str(error)) < 300


def test_long_inputs_are_quoted_as_short_excerpts() -> None:
    error = refused(with_spec(kind="K" * 100_000))
    assert "got 'KKKK" in str(error) and len(str(error)) < 400
    error = refused(with_spec(spec__collection={"dimension": 8, "x" * 10_000: 1}))
    assert len(str(error)) < 400


def test_yaml_anchors_for_real_reuse_still_work() -> None:
    text = yaml.safe_dump(VALID) + "x-common: &c {k: 1}\n"
    with pytest.raises(SpecError, match="x-common"):  # unknown field, but parsed fine
        parse_release(text)


@pytest.mark.parametrize("namespace", ["a.b", "a\x00b", "A", "-a", "", "a" * 64, "a/b"])
def test_namespaces_are_dns_labels(namespace: str) -> None:
    """With no dot in a namespace, ``<namespace>.<name>`` names exactly one track: before,
    namespace ``a.b`` + name ``c`` and namespace ``a`` + name ``b.c`` shared one state
    file, and a rollback of one moved the other's alias."""
    error = refused(with_spec(metadata__namespace=namespace))
    assert error.problems[0][0] == "metadata.namespace"


@pytest.mark.parametrize(
    "uri",
    [
        "http://root:supersecret123@127.0.0.1:19530",
        "http://127.0.0.1:19530?token=supersecret123",
        "https://milvus:443/?Password=supersecret123&x=1",
        "http://supersecret123@milvus:19530",
    ],
)
def test_credentials_in_the_uri_are_refused_without_echoing_them(uri: str) -> None:
    error = refused(with_spec(spec__milvus={"uri": uri}))
    assert "supersecret123" not in str(error)
    assert error.problems[0][0] == "spec.milvus"
    assert "must not be written in the spec" in str(error)


def test_redact_uri_masks_every_credential() -> None:
    shown = redact_uri("http://root:pw1@host:19530/db?token=pw2&timeout=5")
    assert shown == "http://***@host:19530/db?token=***&timeout=5"
    assert redact_uri("http://host:19530") == "http://host:19530"
    assert redact_uri("./data/milvus.db") == "./data/milvus.db"


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        ({"type": "HNSW", "params": {"M": "abc"}}, "M must be a whole number, got 'abc'"),
        ({"type": "HNSW", "params": {"M": 100_000}}, "M must be within 2..2048"),
        ({"type": "HNSW", "params": {"M": True}}, "M must be a whole number"),
        ({"type": "HNSW", "params": {"efconstruction": 64}}, "takes no parameter 'efconstruction'"),
        ({"type": "IVF_FLAT", "params": {"nlist": -5}}, "nlist must be within 1..65536"),
        ({"type": "IVF_PQ", "params": {"nlist": 16, "m": 3}}, "must divide the dimension (8)"),
        ({"type": "FLAT", "params": {"M": 16}}, "FLAT takes no parameter 'M' (known: none)"),
        ({"type": "IVF_PQ", "params": {"nlist": 16}}, "IVF_PQ needs params.m"),
    ],
)
def test_index_parameters_are_checked_before_anything_is_built(
    index: dict[str, Any], expected: str
) -> None:
    error = refused(with_spec(spec__collection={"dimension": 8, "index": index}))
    assert expected in str(error)
    assert error.problems[0][0].startswith("spec.collection")


def test_good_index_parameters_pass() -> None:
    for index in (
        {"type": "HNSW", "params": {"M": 16, "efConstruction": 200}},
        {"type": "IVF_PQ", "params": {"nlist": 16, "m": 4, "nbits": 8}},
        {"type": "IVF_FLAT", "params": {"nlist": 1024}},
    ):
        release_from_dict(with_spec(spec__collection={"dimension": 8, "index": index}))


def test_an_index_without_params_is_built_with_stated_defaults() -> None:
    """Milvus 2.3 refuses HNSW or IVF without build parameters; newer servers choose
    their own. The defaults fill what the spec leaves out, the spec's values win."""

    def params(index: dict[str, Any]) -> dict[str, Any]:
        spec = with_spec(spec__collection={"dimension": 8, "index": index})
        return release_from_dict(spec).spec.collection.index.build_params

    assert params({"type": "HNSW"}) == {"M": 16, "efConstruction": 200}
    assert params({"type": "HNSW", "params": {"M": 32}}) == {"M": 32, "efConstruction": 200}
    assert params({"type": "IVF_FLAT"}) == {"nlist": 128}
    assert params({"type": "FLAT"}) == {}


@pytest.mark.parametrize(
    "message", ["efConstruction out of range: [1, 2147483647]", "parameter `m` not found"]
)
def test_a_bad_argument_is_refused_not_retried(message: str) -> None:
    """Milvus 2.3.5 answers a bad index argument with the generic code 65535, which
    also means "not ready"; the message tells them apart, so it fails at once."""
    with pytest.raises(MilvusRejected, match="Milvus refused"), _translated("creating index"):
        raise MilvusException(code=65535, message=message)
    for unreachable in (
        (65535, "service not ready"),
        (2, "Fail connecting to server on h:1, illegal connection params or server unavailable"),
    ):
        with pytest.raises(MilvusUnavailable), _translated("searching c"):
            raise MilvusException(code=unreachable[0], message=unreachable[1])


def test_a_long_alias_keeps_its_prefix_in_the_collection_name() -> None:
    """A 250-character alias lost its ``alias__`` prefix when the name was shortened, so
    the build was never recognised as the track's; aliases now leave room for it."""
    refused(with_spec(spec__alias="a" * 201))
    alias = "a" * 200
    release_from_dict(with_spec(spec__alias=alias))
    name = collection_name(alias, "v" * 128)
    assert name.startswith(f"{alias}__") and len(name) <= 255
    assert collection_name(alias, "v" * 127) != name
