"""The model boundary: may one collection's vectors be searched in, or compared with,
another's? Pure: no I/O.

Two collections are in one space when they are searched on the same vector field
(``spec.collection.searchField``, recorded as ``embrel.searchField``) and both
record an encoder descriptor
(``embrel.encoder``) and ``same_space`` says so. A collection without one (built
before descriptors were recorded, or a files release without ``spec.embedder``)
falls back to the older rule: the same ``embrel.model`` label and the same
dimension. Every gate that sends one side's vectors to the other asks this one
function first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from controller.embedding.descriptor import encoder_descriptor, same_space
from controller.spec import PRIMARY_VECTOR, EmbedderSpec, EmbeddingRelease


@dataclass(frozen=True)
class VectorSpace:
    """What decides a collection's vector space, as far as it is known."""

    model: str | None  # the embrel.model label; None when not recorded
    dimension: int | None  # None when it could not be read
    encoder: dict[str, Any] | None = None  # the embrel.encoder descriptor, if recorded
    field: str = PRIMARY_VECTOR  # the vector field searched (embrel.searchField)

    def describe(self) -> str:
        on = "" if self.field == PRIMARY_VECTOR else f" on field {self.field}"
        if self.encoder is not None:
            return f"{self.encoder.get('model')} ({self.encoder.get('dimension')}-dim){on}"
        dim = f"{self.dimension}-dim" if self.dimension is not None else "dimension unknown"
        return f"{self.model or 'unknown model'} ({dim}){on}"


def release_space(release: EmbeddingRelease) -> VectorSpace:
    """The space a release's collection is built in."""
    spec = release.spec
    searched = spec.collection.searched
    dim = searched.dimension
    encoder = encoder_descriptor(spec.embedder, dim) if spec.embedder is not None else None
    return VectorSpace(spec.model.label(), dim, encoder, searched.name)


def in_same_space(a: VectorSpace, b: VectorSpace) -> bool:
    """Whether vectors of ``a`` may be searched in, or compared with, ``b``: another
    search field is another space, as another model is."""
    if a.field != b.field:
        return False
    if a.encoder is not None and b.encoder is not None:
        return same_space(a.encoder, b.encoder)
    return (
        a.model is not None
        and a.model == b.model
        and a.dimension is not None
        and a.dimension == b.dimension
    )


def boundary_reason(candidate: VectorSpace, live: VectorSpace) -> str:
    """Why the two sides are in different spaces, for a NotApplicable detail."""
    what = "search field" if candidate.field != live.field else "model"
    return (
        f"{what} changed ({live.describe()} -> {candidate.describe()}): the vectors live in "
        "different spaces"
    )


def embedder_from_descriptor(
    descriptor: dict[str, Any], like: EmbedderSpec | None = None
) -> EmbedderSpec:
    """The ``EmbedderSpec`` that rebuilds a recorded encoder, to embed queries for it.

    A descriptor holds no secrets and no connection settings: those (apiKeyEnv,
    secretRef, concurrency, timeouts, batch size, device) are taken from ``like`` (the
    candidate's ``spec.embedder``) when it is of the same type. ``dimension`` is pinned
    for sentence-transformers (checked when the model loads) but not sent to an
    OpenAI-compatible server, which the recorded encoder may not have asked for it;
    the caller checks what comes back. Raises ``ValueError`` for a damaged descriptor.
    """
    fields: dict[str, Any] = {
        "type": descriptor.get("type"),
        "model": descriptor.get("model"),
        "revision": descriptor.get("revision") or None,
        "normalize": descriptor.get("normalize", True),
        "queryPrefix": descriptor.get("queryPrefix") or "",
        "documentPrefix": descriptor.get("documentPrefix") or "",
    }
    if like is not None and _same_service(like, descriptor):
        fields |= like.model_dump(
            by_alias=True,
            include={"batch_size", "device", *_CONNECTION},
            exclude_none=True,
        )
    if fields["type"] == "openai":
        fields["baseUrl"] = descriptor.get("baseUrl")
    else:
        fields["dimension"] = descriptor.get("dimension")
    try:
        return EmbedderSpec.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'descriptor'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ValueError(f"the recorded encoder cannot be rebuilt: {problems}") from None


def _same_service(like: EmbedderSpec, descriptor: dict[str, Any]) -> bool:
    """Whether ``like``'s settings (its API key variable above all) may be reused."""
    if like.type != descriptor.get("type"):
        return False
    return like.type != "openai" or like.base_url == descriptor.get("baseUrl")


_CONNECTION = {"concurrency", "timeout_seconds", "max_retries", "api_key_env", "secret_ref"}
