"""For applications: query a release's alias the way that survives cutovers.

The controller never imports this module. It packages the client guidance of
docs/client-guidance.md, in two helpers:

``AliasSearcher`` for applications that embed queries themselves and keep one model:

* query through the alias with ``MilvusClient`` (no ORM ``Collection`` object, which
  caches the schema of the collection the alias pointed to when it was created);
* retry once, after a short pause, on the transient errors measured during flips on
  Milvus 2.3.5 (``TRANSIENT_MARKERS``);
* read the live version from the live collection's ``embrel.version`` property.

``ReleaseClient`` for releases that may change the model: a release is vectors AND the
encoder that embeds queries for them, and a query embedded by one model searched
against vectors of another answers nonsense without any error. It resolves the alias
itself, embeds each query with the encoder the serving collection records
(``embrel.encoder``) and searches that collection by name, so every answer comes
from the collection whose model embedded the query:

    from controller.client import AliasSearcher, ReleaseClient
    products = ReleaseClient("http://milvus:19530", "products", token=...)
    [answer] = products.search_text(["red shoes"], limit=10, output_fields=["id"])
    answer.hits, answer.version, answer.collection
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pymilvus import MilvusClient, MilvusException

from controller.embedding.descriptor import (
    ENCODER_PROPERTY,
    descriptor_json,
    encoder_descriptor,
    parse_descriptor,
    same_space,
    spec_from_descriptor,
)
from controller.ports import EmbedderFactory, EmbedderPort
from controller.spec import PRIMARY_VECTOR, EmbedderSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

# The collection properties embrel writes (controller/engine/state.py owns them; repeated
# here so an application does not import the engine).
VERSION_PROPERTY = "embrel.version"
ALIAS_PROPERTY = "embrel.alias"
PROMOTED_AT_PROPERTY = "embrel.promotedAt"
# The vector field the release searches (spec.collection.searchField); absent: "vector".
SEARCH_FIELD_PROPERTY = "embrel.searchField"
# On the live collection while a candidate is validated: JSON {"version", "collection",
# "encoder": <descriptor>}; the empty string when nothing is announced.
NEXT_PROPERTY = "embrel.next"

# Substrings of the errors seen on searches within ~10 ms of an alias flip on Milvus
# 2.3.5 (benchmarks/flip_proof.py); each went away on a retry.
TRANSIENT_MARKERS = (
    "failed to get delegator",
    "can not find client of node",
    "channel not available",
    "collection not loaded",
    "not found in current target",
    "can't find collection name",  # the alias, for an instant after alter_alias
)
# A collection searched by name was dropped or released (Milvus 2.3.5 and Milvus Lite
# wording): what the alias points to now must be read again.
GONE_MARKERS = (
    "collection not found",
    "collection not loaded",
    "in state 'released'",
    "can't find collection",
)
_GONE_CODES = (100, 101)  # CollectionNotExists, CollectionNotLoaded


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", "") or exc)


def is_transient(exc: BaseException) -> bool:
    """True for the errors a flip can cause, which one retry clears."""
    text = _message(exc).lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


def is_gone(exc: BaseException) -> bool:
    """True when the collection searched by name was dropped or released."""
    text = _message(exc).lower()
    return getattr(exc, "code", None) in _GONE_CODES or any(m in text for m in GONE_MARKERS)


class _RetryingSearcher:
    """What both helpers share: one ``MilvusClient``, the retry and its tallies."""

    def __init__(
        self, uri: str, token: str, retries: int, pause: float, client: MilvusClient | None
    ) -> None:
        self.retries, self.pause = retries, pause
        self.client = client or MilvusClient(uri=uri, token=token)
        self.retried = 0  # how many searches needed a retry (for your metrics)
        self.retried_errors: Counter[str] = Counter()  # what they failed with, first line
        self._tally_lock = threading.Lock()

    def _with_retry(
        self,
        attempt: Callable[[], T],
        retryable: Callable[[MilvusException], bool] = is_transient,
        before_retry: Callable[[MilvusException], None] | None = None,
    ) -> T:
        for n in range(self.retries + 1):
            try:
                return attempt()
            except MilvusException as exc:
                if n == self.retries or not retryable(exc):
                    raise
                with self._tally_lock:
                    self.retried += 1
                    self.retried_errors[_message(exc).splitlines()[0][:120]] += 1
                if before_retry is not None:
                    before_retry(exc)
                time.sleep(self.pause)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


class AliasSearcher(_RetryingSearcher):
    """Searches through an alias, retrying the transient errors of a cutover once."""

    def __init__(
        self,
        uri: str,
        alias: str,
        token: str = "",
        retries: int = 1,
        pause: float = 0.05,
        client: MilvusClient | None = None,
    ) -> None:
        super().__init__(uri, token, retries, pause, client)
        self.alias = alias

    def search(self, data: list[Any], limit: int = 10, **kwargs: Any) -> Any:
        return self._with_retry(
            lambda: self.client.search(self.alias, data=data, limit=limit, **kwargs)
        )

    def live_collection(self) -> str:
        return str(self.client.describe_alias(self.alias)["collection_name"])

    def live_version(self) -> str | None:
        """The ``spec.version`` embrel recorded on the collection the alias points to."""
        props = self.client.describe_collection(self.live_collection()).get("properties") or {}
        version = props.get(VERSION_PROPERTY)
        return str(version) if version else None


class EncoderMismatch(ValueError):
    """Vectors (or a collection) whose encoder no searchable collection of the track has."""


class MissingEncoder(LookupError):
    """The collection records no ``embrel.encoder``: how to embed for it is unknown."""


@dataclass(frozen=True)
class Answer:
    """The hits for one query, and which collection (of which version) served them;
    ``encoder`` is the descriptor of the model that embedded the query, always the
    serving collection's own."""

    hits: list[dict[str, Any]]
    version: str | None
    collection: str
    encoder: dict[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    """A collection of the track as its embrel properties describe it."""

    name: str
    version: str | None
    encoder: dict[str, Any] | None
    alias: str | None
    promoted_at: str
    announced: dict[str, Any] | None  # the encoder of the candidate in embrel.next
    search_field: str = PRIMARY_VECTOR  # the vector field its encoder's queries search

    @classmethod
    def read(cls, client: MilvusClient, name: str) -> CollectionInfo:
        props = client.describe_collection(name).get("properties") or {}
        return cls(
            name=name,
            version=props.get(VERSION_PROPERTY) or None,
            encoder=parse_descriptor(props.get(ENCODER_PROPERTY) or ""),
            alias=props.get(ALIAS_PROPERTY) or None,
            promoted_at=props.get(PROMOTED_AT_PROPERTY) or "",
            announced=_announced_encoder(props.get(NEXT_PROPERTY) or ""),
            search_field=props.get(SEARCH_FIELD_PROPERTY) or PRIMARY_VECTOR,
        )

    def summary(self) -> str:
        return f"{self.name} ({_describe(self.encoder)})"


def _announced_encoder(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    encoder = value.get("encoder") if isinstance(value, dict) else None
    if isinstance(encoder, str):
        return parse_descriptor(encoder)
    return parse_descriptor(json.dumps(encoder)) if isinstance(encoder, dict) else None


def _describe(descriptor: dict[str, Any] | None) -> str:
    if descriptor is None:
        return "no embrel.encoder recorded"
    return f"{descriptor.get('type')} {descriptor.get('model')}, dimension {descriptor.get('dimension')}"


class EncoderCache:
    """One encoder per descriptor, built once per process however many threads ask
    (the others wait for that one load). Share one cache between clients to share models.

    ``factory`` builds an encoder from the ``EmbedderSpec`` rebuilt from a descriptor
    (default ``controller.embedding.encoders.make_encoder``); ``spec_settings`` adds
    what descriptors do not record (``api_key_env``, ``device``, ``base_url``; the
    openai-only ones apply to openai descriptors only)."""

    def __init__(
        self,
        factory: EmbedderFactory | None = None,
        base_dir: Path | None = None,
        spec_settings: dict[str, Any] | None = None,
    ) -> None:
        self.factory, self.base_dir = factory, base_dir
        self.spec_settings = dict(spec_settings or {})
        self.loads = 0  # encoders built (model loads), for your metrics
        self._lock = threading.Lock()
        self._encoders: dict[str, Future[EmbedderPort]] = {}

    def get(self, descriptor: dict[str, Any]) -> EmbedderPort:
        key = descriptor_json(descriptor)
        with self._lock:
            pending = self._encoders.get(key)
            owner = pending is None
            if pending is None:
                pending = self._encoders[key] = Future()
        if owner:
            try:
                pending.set_result(self._build(descriptor))
            except BaseException as exc:
                with self._lock:  # let a later call try again
                    del self._encoders[key]
                pending.set_exception(exc)
        return pending.result()

    def cached(self, descriptor: dict[str, Any]) -> bool:
        with self._lock:
            return descriptor_json(descriptor) in self._encoders

    def preload(self, descriptor: dict[str, Any]) -> bool:
        """Start loading ``descriptor``'s encoder in the background; False if it is
        loaded or loading already."""
        if self.cached(descriptor):
            return False
        threading.Thread(
            target=self._quiet_get, args=(descriptor,), name="embrel-preload", daemon=True
        ).start()
        return True

    def _quiet_get(self, descriptor: dict[str, Any]) -> None:
        try:
            self.get(descriptor)
        except Exception as exc:  # the first request that needs it will raise it
            log.warning("preloading the encoder %s failed: %s", _describe(descriptor), exc)

    def _build(self, descriptor: dict[str, Any]) -> EmbedderPort:
        settings = self.spec_settings
        if descriptor.get("type") != "openai":  # one cache serves both types
            settings = {k: v for k, v in settings.items() if _flat(k) not in _OPENAI_SETTINGS}
        spec = spec_from_descriptor(descriptor, **settings)
        if self.factory is not None:
            encoder = self.factory(spec)
        else:
            from controller.embedding.encoders import make_encoder

            encoder = make_encoder(spec, self.base_dir)
        with self._lock:
            self.loads += 1
        if encoder.dimension() != descriptor["dimension"]:
            raise EncoderMismatch(
                f"the encoder built for {_describe(descriptor)} produces dimension "
                f"{encoder.dimension()}"
            )
        return encoder


# EmbedderSpec fields of the openai type only, flattened (no case, no underscores).
_OPENAI_SETTINGS = {"baseurl", "concurrency", "timeoutseconds", "maxretries", "apikeyenv"}


def _flat(name: str) -> str:
    return name.replace("_", "").lower()


_SHARED_ENCODERS = EncoderCache()  # the default: one model load per descriptor per process


@dataclass(frozen=True)
class _Resolution:
    live: CollectionInfo
    at: float  # time.monotonic() when it was read


@dataclass
class _Track:
    """The retained collections of the track, for vectors of an older model."""

    collections: list[CollectionInfo] = field(default_factory=list)
    loaded: dict[str, bool] = field(default_factory=dict)
    at: float = float("-inf")


class ReleaseClient(_RetryingSearcher):
    """Searches a release so that a query is never embedded by one model and searched
    against vectors of another, across flips, rollbacks and model changes.

    Resolution is lazy: a call that finds it older than ``refresh_seconds`` reads the
    alias and the live collection's properties again (two requests, one caller at a
    time); so a flip is followed by every call that starts ``refresh_seconds`` after
    it, and no thread runs while the application is idle. A stale resolution still
    answers correctly (its collection and its encoder belong together, and embrel
    keeps the previous collection loaded for the drain period); a collection dropped or
    released under the client is resolved again at once and the search retried.

    ``encoders``: an ``EncoderCache`` (share one between clients), or a factory
    ``EmbedderSpec -> encoder`` (for a custom cache), or None for the process-wide
    cache over ``make_encoder``. With ``preload``, the encoder of the candidate the
    controller announces (``embrel.next``) is loaded in the background before its flip.
    """

    def __init__(
        self,
        uri: str,
        alias: str,
        token: str = "",
        encoders: EncoderCache | EmbedderFactory | None = None,
        refresh_seconds: float = 1.0,
        retries: int = 1,
        pause: float = 0.05,
        preload: bool = True,
        client: MilvusClient | None = None,
    ) -> None:
        super().__init__(uri, token, retries, pause, client)
        if refresh_seconds < 0:
            raise ValueError(f"refresh_seconds must be >= 0, got {refresh_seconds}")
        self.alias, self.refresh_seconds, self.preload = alias, refresh_seconds, preload
        if encoders is None:
            encoders = _SHARED_ENCODERS
        self.encoders = encoders if isinstance(encoders, EncoderCache) else EncoderCache(encoders)
        self.answers: Counter[str] = Counter()  # answers (one per query) by version
        self.reresolved = 0  # resolutions forced by a dropped or released collection
        self.flips_followed = 0  # times the alias was found on another collection
        self.preloaded = 0  # announced encoders loaded ahead of their flip
        self._resolution: _Resolution | None = None
        self._track = _Track()
        self._resolve_lock = threading.Lock()

    # -- queries ----------------------------------------------------------------------

    def search_text(
        self,
        texts: Sequence[str],
        limit: int = 10,
        filter: str = "",
        output_fields: list[str] | None = None,
        search_params: dict[str, Any] | None = None,
    ) -> list[Answer]:
        """One ``Answer`` per text: embedded with the live collection's encoder
        (``embed_queries``), searched in that collection by name."""
        if isinstance(texts, str):
            raise TypeError("texts is a list of strings; wrap a single query in a list")
        if not texts:
            return []
        # Per encoder: a retry re-embeds only when the new resolution's encoder differs.
        vectors: dict[str, list[list[float]]] = {}

        def attempt() -> list[Answer]:
            live = self.live()
            if live.encoder is None:
                raise MissingEncoder(
                    f"collection {live.name} (behind alias {self.alias}) records no "
                    f"{ENCODER_PROPERTY}; embed the queries yourself and use search()"
                )
            key = descriptor_json(live.encoder)
            if key not in vectors:
                embedded = self.encoders.get(live.encoder).embed_queries(list(texts))
                vectors[key] = np.asarray(embedded, dtype=np.float32).tolist()
            return self._search_in(live, vectors[key], limit, filter, output_fields, search_params)

        return self._with_retry(attempt, self._retryable, self._after_error)

    def search(
        self,
        vectors: Sequence[Sequence[float]] | np.ndarray,
        encoder: dict[str, Any] | EmbedderSpec | str,
        limit: int = 10,
        filter: str = "",
        output_fields: list[str] | None = None,
        search_params: dict[str, Any] | None = None,
    ) -> list[Answer]:
        """Searches query vectors the application embedded with ``encoder`` (its
        ``embrel.encoder`` descriptor, as a dict or JSON, or its ``EmbedderSpec``) in the
        collection of the track embedded by that model: the live one when it matches,
        else a retained one that is still loaded (the drain period after a flip). Raises
        ``EncoderMismatch`` when no such collection exists."""
        data = np.asarray(vectors, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ValueError(f"vectors must be a non-empty list of vectors, got shape {data.shape}")
        descriptor = _as_descriptor(encoder, data.shape[1])
        if data.shape[1] != descriptor["dimension"]:
            raise EncoderMismatch(
                f"vectors have dimension {data.shape[1]}, their encoder {_describe(descriptor)}"
            )
        rows = data.tolist()

        def attempt() -> list[Answer]:
            target = self._route(descriptor)
            return self._search_in(target, rows, limit, filter, output_fields, search_params)

        return self._with_retry(attempt, self._retryable, self._after_error)

    def _search_in(
        self,
        target: CollectionInfo,
        rows: list[list[float]],
        limit: int,
        filter: str,
        output_fields: list[str] | None,
        search_params: dict[str, Any] | None,
    ) -> list[Answer]:
        assert target.encoder is not None
        result = self.client.search(
            target.name,
            data=rows,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            search_params=search_params or {},
            # The field the release declared; named always, as Lite would search the first.
            anns_field=target.search_field,
        )
        answers = [
            Answer([dict(hit) for hit in hits], target.version, target.name, target.encoder)
            for hits in result
        ]
        with self._tally_lock:
            self.answers[target.version or target.name] += len(answers)
        return answers

    # -- resolution -------------------------------------------------------------------

    def live(self) -> CollectionInfo:
        """The collection the alias points to, as of at most ``refresh_seconds`` ago."""
        return self._resolved(stale_before=time.monotonic() - self.refresh_seconds).live

    def live_version(self) -> str | None:
        return self.live().version

    def _resolved(self, stale_before: float) -> _Resolution:
        current = self._resolution
        if current is not None and current.at > stale_before:
            return current
        with self._resolve_lock:
            current = self._resolution
            if current is not None and current.at > stale_before:  # another caller read it
                return current
            read_at = time.monotonic()
            name = str(self.client.describe_alias(self.alias)["collection_name"])
            fresh = _Resolution(CollectionInfo.read(self.client, name), read_at)
            if current is not None and current.live.name != name:
                self.flips_followed += 1
                self._track = _Track()  # which collections are retained may have changed
            self._resolution = fresh
        self._preload_announced(fresh.live)
        return fresh

    def _preload_announced(self, live: CollectionInfo) -> None:
        if self.preload and live.announced is not None and self.encoders.preload(live.announced):
            with self._tally_lock:
                self.preloaded += 1

    @staticmethod
    def _retryable(exc: MilvusException) -> bool:
        return is_transient(exc) or is_gone(exc)

    def _after_error(self, exc: MilvusException) -> None:
        if not is_gone(exc):
            return
        failed_at = time.monotonic()
        with self._resolve_lock:
            self._track = _Track()
        self._resolved(stale_before=failed_at)
        with self._tally_lock:
            self.reresolved += 1

    # -- vectors of a given model -----------------------------------------------------

    def _route(self, descriptor: dict[str, Any]) -> CollectionInfo:
        live = self.live()
        if live.encoder is not None and same_space(live.encoder, descriptor):
            return live
        track = self._retained()
        matching = [
            c
            for c in track.collections
            if c.name != live.name and c.encoder is not None and same_space(c.encoder, descriptor)
        ]
        loaded = [c for c in matching if track.loaded.get(c.name)]
        if loaded:  # the one most recently live (a rollback target)
            return max(loaded, key=lambda c: (c.promoted_at, c.name))
        if matching:
            raise EncoderMismatch(
                f"vectors of {_describe(descriptor)} match {', '.join(c.name for c in matching)} "
                f"of alias {self.alias}, no longer loaded (the drain period after the flip is "
                f"over); embed with the live encoder: {live.summary()}"
            )
        retained = "; ".join(c.summary() for c in track.collections if c.name != live.name)
        raise EncoderMismatch(
            f"vectors of {_describe(descriptor)} match no collection of alias {self.alias}: "
            f"live {live.summary()}; retained: {retained or 'none'}"
        )

    def _retained(self) -> _Track:
        """The track's collections (``<alias>__*`` with ``embrel.alias`` = the alias) and
        whether each is loaded, read again at most every ``refresh_seconds``."""
        with self._resolve_lock:
            track = self._track
            if track.at > time.monotonic() - self.refresh_seconds:
                return track
            read_at = time.monotonic()
            names = [n for n in self.client.list_collections() if n.startswith(f"{self.alias}__")]
            track = _Track(at=read_at)
            for name in names:
                try:
                    collection = CollectionInfo.read(self.client, name)
                    state = self.client.get_load_state(name).get("state")
                except MilvusException as exc:
                    if is_gone(exc):  # dropped between the listing and now
                        continue
                    raise
                if collection.alias == self.alias:
                    track.collections.append(collection)
                    track.loaded[name] = getattr(state, "name", str(state)) == "Loaded"
            self._track = track
            return track


def _as_descriptor(encoder: dict[str, Any] | EmbedderSpec | str, dimension: int) -> dict[str, Any]:
    if isinstance(encoder, EmbedderSpec):
        return encoder_descriptor(encoder, encoder.dimension or dimension)
    descriptor = parse_descriptor(encoder) if isinstance(encoder, str) else encoder
    if not isinstance(descriptor, dict) or descriptor.get("dimension") is None:
        raise ValueError(
            f"encoder must be an {ENCODER_PROPERTY} descriptor (with model and dimension) or "
            f"an EmbedderSpec, got {str(encoder)[:200]}"
        )
    return descriptor
