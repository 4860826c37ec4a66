"""The EmbeddingRelease CustomResourceDefinition, generated from the spec model.

Pure: the pydantic model (``controller.spec``) is the one definition of the spec;
this module turns its JSON Schema into a *structural* OpenAPI v3 schema, the
dialect the Kubernetes API server accepts (apiextensions.k8s.io/v1):

- every node has a ``type`` (or ``x-kubernetes-preserve-unknown-fields``);
- no ``$ref``: definitions are inlined;
- ``X | None`` (``anyOf [X, null]``) becomes ``X`` with ``nullable: true``: a
  structural schema may not put ``type`` inside ``anyOf``;
- ``Literal`` becomes ``enum``; ``ge``/``le`` become ``minimum``/``maximum``;
  ``gt`` becomes ``minimum`` with ``exclusiveMinimum: true`` (OpenAPI 3.0 form);
- closed objects carry no ``additionalProperties: false`` (forbidden next to
  ``properties``); the API server refuses unknown fields through strict field
  validation (kubectl's default) and prunes them otherwise;
- ``dict[str, X]`` becomes ``additionalProperties: X``.

``validation_schema`` turns the result back into a JSON Schema (draft 4, whose
``exclusiveMinimum`` is the boolean OpenAPI form) that checks an object the way
the API server does, for tests and offline checks with ``jsonschema``.

``make manifests`` (``controller.manifests``) writes the CRD to the repository.
"""

from __future__ import annotations

from typing import Any

from controller.spec import API_VERSION, KIND, EmbeddingRelease

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "embeddingreleases"
SINGULAR = "embeddingrelease"
SHORT_NAMES = ["er"]
CRD_NAME = f"{PLURAL}.{GROUP}"

# Keywords copied unchanged; the order here is the order written to YAML.
_KEPT = (
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "nullable",
    "default",
)
# JSON Schema keywords that carry no validation in a CRD.
_DROPPED = {"title"}
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Alias", "type": "string", "jsonPath": ".spec.alias"},
    {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Live", "type": "string", "jsonPath": ".status.live.version"},
    {
        "name": "Recall",
        "type": "number",
        "jsonPath": ".status.validation.recall",
        "description": "golden-set recall@k of the last validation (else ANN recall)",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Candidate",
        "type": "string",
        "jsonPath": ".status.candidate.version",
        "priority": 1,
    },
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def custom_resource_definition() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CRD for EmbeddingRelease, as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "embrel", "app.kubernetes.io/part-of": "embrel"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["embrel"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": resource_schema()},
                }
            ],
        },
    }


def resource_schema() -> dict[str, Any]:
    """The openAPIV3Schema: apiVersion, kind, metadata, the generated spec, status."""
    return {
        "description": "A blue/green release of embeddings behind one Milvus alias.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only name and generateName may be constrained here; the API server owns the rest.
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }


def spec_schema() -> dict[str, Any]:
    """``spec`` as a structural schema, from ``EmbeddingRelease``'s JSON Schema."""
    source = EmbeddingRelease.model_json_schema(by_alias=True)
    defs = source.get("$defs", {})
    spec = structural(source["properties"]["spec"], defs)
    return {"description": "The desired release (see the README for every field)."} | spec


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node (pydantic's output) -> a structural OpenAPI v3 node."""
    node = _inline_ref(node, defs)
    if "anyOf" in node:
        node = _collapse_union(node, defs)
    if "const" in node:
        node = {k: v for k, v in node.items() if k != "const"} | {
            "enum": [node["const"]],
            "type": node.get("type", _JSON_TYPES[type(node["const"])]),
        }
    unknown = (
        set(node)
        - set(_KEPT)
        - _DROPPED
        - {"properties", "required"}
        - {
            "additionalProperties",
            "items",
            "anyOf",
            "x-kubernetes-preserve-unknown-fields",
        }
    )
    if unknown:
        raise ValueError(f"no structural translation for JSON Schema keywords {sorted(unknown)}")
    node = _to_openapi_bounds(node)
    out: dict[str, Any] = {key: node[key] for key in _KEPT if key in node}
    if "description" in out:
        out["description"] = out["description"].replace("``", "`")
    if isinstance(out.get("default"), dict | list) or out.get("default", 0) is None:
        # Defaults of objects, lists and null stay in the model: the API server would
        # write them into every stored object and hide which fields a user set.
        del out["default"]
    if "properties" in node:
        out["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
        if node.get("required"):
            out["required"] = list(node["required"])
    if isinstance(node.get("additionalProperties"), dict):
        value = node["additionalProperties"]
        out["additionalProperties"] = structural(value, defs) if value else _any()
    elif node.get("additionalProperties") is True or (
        out.get("type") == "object" and "properties" not in node
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        out["items"] = structural(node["items"], defs)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _inline_ref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target = defs[node["$ref"].removeprefix("#/$defs/")]
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    return _inline_ref(target, defs) | siblings


def _collapse_union(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [X, null]`` -> X nullable; a union of several scalar types -> any value."""
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    options = [_inline_ref(o, defs) for o in node["anyOf"]]
    concrete = [o for o in options if o.get("type") != "null"]
    nullable = len(concrete) < len(options)
    if len(concrete) == 1:
        merged = concrete[0] | rest
    elif {o.get("type") for o in concrete} == {"integer", "number"}:
        merged = {"type": "number"} | rest
    else:
        # e.g. index params (int | float | str): a structural schema cannot say
        # "one of these types"; any scalar passes here, the model checks the rest.
        types = " | ".join(str(o.get("type")) for o in concrete)
        merged = _any(f"one of: {types}") | rest
    if nullable:
        merged["nullable"] = True
    return merged


def _any(description: str | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
    if description:
        node["description"] = description
    return node


def _to_openapi_bounds(node: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema 2020's numeric ``exclusiveMinimum: x`` -> OpenAPI 3.0's boolean form."""
    out = dict(node)
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = node.get(flag)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound] = value
            out[flag] = True
    return out


def status_schema() -> dict[str, Any]:
    """Status as ``ReleaseStatus.to_dict`` writes it; open, so new fields never break a patch."""

    def obj(description: str, **props: dict[str, Any]) -> dict[str, Any]:
        node: dict[str, Any] = {"description": description, "type": "object"}
        if props:
            node["properties"] = props
        node["x-kubernetes-preserve-unknown-fields"] = True
        return node

    string: dict[str, Any] = {"type": "string"}
    integer: dict[str, Any] = {"type": "integer", "format": "int64"}
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": string,
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": string,
            "message": string,
            "observedGeneration": integer,
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    }
    collection = {
        "version": string,
        "collection": string,
        "model": string,
        "rows": integer,
    }
    return obj(
        "Written by the controller through the status subresource.",
        phase=string,
        message=string,
        observedGeneration=integer,
        specHash=string,
        conditions={
            "description": "Ready, Reconciling and Stalled (Kubernetes API conventions).",
            "type": "array",
            "items": condition,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        live=obj("The collection the alias points to.", **collection),
        candidate=obj("The collection being built and validated.", **collection),
        validation=obj(
            "The candidate's last validation.",
            outcome=string,
            passed={"type": "boolean"},
            recall={"type": "number", "nullable": True},
            checks={"type": "array", "items": obj("One gate: value, threshold, outcome.")},
            report=string,
        ),
        history={"type": "array", "items": obj("One live period or failed attempt.")},
        build=obj("How the candidate was built."),
        cutover=obj("The last alias flip."),
        drift=obj("The live collection against its reference taken at promotion."),
        unavailableSince={
            "description": "When Milvus stopped answering; set only while it does not.",
            "type": "string",
            "format": "date-time",
        },
    )


def validation_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A structural schema -> a draft-4 JSON Schema that judges like the API server.

    ``nullable`` admits null; an object with ``properties`` and without
    ``x-kubernetes-preserve-unknown-fields`` refuses unknown fields, as strict
    server-side field validation (``kubectl apply``'s default) does.
    """
    out: dict[str, Any] = {
        k: v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None]
    if "properties" in schema:
        out["properties"] = {k: validation_schema(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = validation_schema(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = validation_schema(schema["items"])
    return out
