"""The one place that maps ``spec.embedder.type`` to an encoder.

Drivers call ``make_encoder``; the sentence-transformers module is imported only
when a spec asks for it, so the ``openai`` type needs neither torch nor the
``embed`` extra. The descriptor helpers are re-exported for the drivers' convenience;
the core imports them from ``controller.embedding.descriptor``, which does no I/O.
"""

from __future__ import annotations

from pathlib import Path

from controller.embedding.descriptor import (
    ENCODER_PROPERTY,
    descriptor_json,
    encoder_descriptor,
    parse_descriptor,
    same_space,
)
from controller.ports import EmbedderPort
from controller.spec import EmbedderSpec

__all__ = [
    "ENCODER_PROPERTY",
    "descriptor_json",
    "encoder_descriptor",
    "make_encoder",
    "parse_descriptor",
    "same_space",
]


def make_encoder(
    spec: EmbedderSpec, base_dir: Path | None = None, *, api_key: str | None = None
) -> EmbedderPort:
    """The encoder ``spec`` describes. ``base_dir`` resolves a relative local model path
    (sentence-transformers); ``api_key`` (e.g. from ``secretRef``) wins over ``apiKeyEnv``."""
    if spec.type == "openai":
        from controller.embedding.openai import OpenAIEncoder

        return OpenAIEncoder(spec, api_key=api_key)
    if api_key is not None:
        raise ValueError("an API key is for spec.embedder type openai only")
    from controller.embedding.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(spec, base_dir)
