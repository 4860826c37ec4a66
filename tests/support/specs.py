"""Release documents for tests that check the spec model itself: the smallest valid
release, and the SpecError a changed one raises."""

from __future__ import annotations

from typing import Any

import pytest

from controller.errors import SpecError
from controller.spec import release_from_dict


def minimal_release(
    name: str = "products", namespace: str | None = None, **spec: Any
) -> dict[str, Any]:
    """The smallest valid EmbeddingRelease as a dict, ``spec`` keys replaced or added."""
    body: dict[str, Any] = {
        "alias": "products",
        "version": "v1",
        "model": {"name": "m"},
        "milvus": {"uri": "http://milvus:19530"},
        "collection": {"dimension": 8},
        "source": {"files": {"uri": "v1.parquet"}},
    }
    return {
        "apiVersion": "embrel.dev/v1alpha1",
        "kind": "EmbeddingRelease",
        "metadata": {"name": name} | ({"namespace": namespace} if namespace else {}),
        "spec": body | spec,
    }


def spec_error(doc: dict[str, Any]) -> SpecError:
    """The SpecError ``doc`` raises (the test fails when it parses)."""
    with pytest.raises(SpecError) as exc:
        release_from_dict(doc)
    return exc.value
