"""What a document's embedding depends on: its input text and its content hash. Pure.

The embedded text is the document's metadata fields, one ``name: value`` line each
in the order the spec lists them, then its text; without metadata fields it is the
text alone. The content hash covers that input plus what else decides the vector
(``EmbedderSpec.document_identity``: model name, revision and normalisation; the
encoder type, dimension and document prefix where set), so equal hashes mean equal
vectors: a document whose hash matches the base collection's row is copied, one
whose hash is in the embedding cache is served from it, and only the rest is embedded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from controller.spec import EmbedderSpec

HASH_LENGTH = 64  # sha256 in hex; the collection field is VARCHAR(64)


def embedding_input(text: str, metadata: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The string handed to the model for one document."""
    lines = [f"{name}: {_plain(metadata[name])}" for name in fields]
    return "\n".join([*lines, text])


def content_hash(
    text: str, metadata: Mapping[str, Any], fields: Sequence[str], embedder: EmbedderSpec
) -> str:
    """sha256 of everything that determines the document's vector."""
    payload = json.dumps(
        {"input": embedding_input(text, metadata, fields), **embedder.document_identity()},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
