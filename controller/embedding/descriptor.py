"""The ``embrel.encoder`` descriptor: how to embed a query for a collection. Pure.

Every collection records, as its ``embrel.encoder`` property, the JSON of the
encoder its vectors came from, so any reader (an application, a gate, a person)
can tell how a query must be embedded to search it, and whether two collections'
vectors may be compared at all. It holds no secrets: no API key, no key variable.
"""

from __future__ import annotations

import json
from typing import Any

from controller.spec import EmbedderSpec, redact_uri

ENCODER_PROPERTY = "embrel.encoder"
# What decides the vector space; baseUrl does not (one model served from two hosts).
SPACE_KEYS = (
    "type",
    "model",
    "revision",
    "dimension",
    "normalize",
    "queryPrefix",
    "documentPrefix",
)
# Absent in a descriptor means the default (written before the field existed).
_DEFAULTS: dict[str, Any] = {"revision": "", "queryPrefix": "", "documentPrefix": ""}


def encoder_descriptor(spec: EmbedderSpec, dimension: int) -> dict[str, Any]:
    """The descriptor of ``spec``'s encoder; ``dimension`` is what it produces."""
    descriptor: dict[str, Any] = {
        "type": spec.type,
        "model": spec.model,
        "revision": spec.revision or "",
        "dimension": dimension,
        "normalize": spec.normalize,
        "queryPrefix": spec.query_prefix,
        "documentPrefix": spec.document_prefix,
    }
    if spec.base_url is not None:
        descriptor["baseUrl"] = redact_uri(spec.base_url)
    return descriptor


def descriptor_json(descriptor: dict[str, Any]) -> str:
    """The property value: compact, keys sorted, so equal descriptors are equal text."""
    return json.dumps(descriptor, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_descriptor(text: str) -> dict[str, Any] | None:
    """A descriptor read back from a property; None if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("model"), str):
        return None
    return value


def same_space(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether vectors of ``a`` and ``b`` live in one space (may be compared, searched
    with the same query vector): type, model, revision, dimension, normalisation and
    both prefixes equal. A descriptor missing type, model or dimension matches nothing."""
    for key in ("type", "model", "dimension"):
        if a.get(key) is None or b.get(key) is None:
            return False
    return all(_value(a, key) == _value(b, key) for key in SPACE_KEYS)


def _value(descriptor: dict[str, Any], key: str) -> Any:
    value = descriptor.get(key)
    return _DEFAULTS.get(key) if value is None else value


def spec_from_descriptor(descriptor: dict[str, Any], **settings: Any) -> EmbedderSpec:
    """The ``EmbedderSpec`` that embeds in ``descriptor``'s space, for a reader that must
    embed queries for a collection. ``settings`` are what a descriptor does not record
    (``api_key_env``, ``device``, ``batch_size``, a ``base_url`` reachable from the
    reader); they cannot change the space. Raises ``ValueError`` naming what is wrong."""
    if parse_descriptor(json.dumps(descriptor)) is None or descriptor.get("dimension") is None:
        raise ValueError(f"not an {ENCODER_PROPERTY} descriptor (needs model and dimension)")
    space_settings = sorted(k for k in settings if _camel(k) in SPACE_KEYS)
    if space_settings:
        raise ValueError(f"settings {space_settings} would change the encoder's vector space")
    fields = {key: descriptor[key] for key in (*SPACE_KEYS, "baseUrl") if key in descriptor}
    fields["revision"] = fields.get("revision") or None
    return EmbedderSpec.model_validate({**fields, **settings})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
