"""A Kubernetes API server for tests: kmock's emulator with the gaps that matter closed.

kmock 0.8 (by kopf's author) serves create/get/list/watch/patch/delete once a
resource is declared, but, measured against the official client, it differs from a
real API server where a controller notices:

==============================================  ==========================================
kmock 0.8                                        ``KubeEmulator`` (like kube-apiserver)
==============================================  ==========================================
create answers 200 (the client returns None)     201 Created
no resourceVersion/generation/uid/creation time  all set; one cluster-wide, monotonic RV;
                                                 generation bumped on spec changes only
a stale resourceVersion is accepted              409 Conflict on update, patch and replace
PUT answers 404 (Lease renewal needs it)         PUT replaces the object (or its status)
status in a main-resource patch is stored        ignored (status subresource); a status
                                                 write changes nothing but status
watch ignores timeoutSeconds/resourceVersion     both honoured: events after the given RV
and replays ADDED for every object               only; an expired RV answers an ERROR 410
                                                 event; BOOKMARKs when asked for
``/api/v1/namespaces`` answers 500               namespaces are served
deletion with finalizers                         deletionTimestamp set; the object goes when
                                                 the last finalizer is removed
==============================================  ==========================================

``KubeApiServer`` runs it on a background thread on 127.0.0.1 so synchronous clients
(the official ``kubernetes`` package, a controller subprocess) can talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, dicts, enums, rendering

EMBREL = kmock.resource("embrel.dev", "v1alpha1", "embeddingreleases")
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")
EVENTS = kmock.resource("", "v1", "events")
SECRETS = kmock.resource("", "v1", "secrets")
NAMESPACES = kmock.resource("", "v1", "namespaces")

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
RESOURCES: dict[kmock.resource, kmock.ResourceInfo] = {
    EMBREL: kmock.ResourceInfo(
        kind="EmbeddingRelease",
        singular="embeddingrelease",
        shortnames={"er"},
        namespaced=True,
        subresources={"status"},
        verbs=ALL_VERBS,
    ),
    LEASES: kmock.ResourceInfo(kind="Lease", singular="lease", namespaced=True, verbs=ALL_VERBS),
    EVENTS: kmock.ResourceInfo(kind="Event", singular="event", namespaced=True, verbs=ALL_VERBS),
    SECRETS: kmock.ResourceInfo(kind="Secret", singular="secret", namespaced=True, verbs=ALL_VERBS),
    NAMESPACES: kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs=ALL_VERBS
    ),
}

# Fields of metadata that only the server sets.
_SERVER_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp")
_NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?/?$")
# The events a watch can resume from; older resourceVersions answer 410 Gone.
EVENT_WINDOW = 10_000


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details={})


@dataclass
class _Change:
    rv: int
    resource: kmock.resource
    namespace: str | None
    event: dict[str, Any]


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, answering like kube-apiserver where a controller can tell."""

    bookmark_interval: float = 1.0
    _rv: int = attrs.field(default=0, init=False)
    _log: list[_Change] = attrs.field(factory=list, init=False)
    _horizon: int = attrs.field(default=0, init=False)  # oldest RV a watch may resume from
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _epoch: int = attrs.field(default=0, init=False)  # bumped to end every open watch

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # fallbacks for list/watch/fetch/create/update/delete
        self.fallback[kmock.method.PUT] << self._serve_replace
        for resource, info in RESOURCES.items():
            self.resources[resource] = info

    # -- request routing --------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """RawHandler.__call__ with our own parsing (kmock fails on /api/v1/namespaces)."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse(raw_request)
            self._requests.append(request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                assert e.__cause__ is not None
                raise e.__cause__ from None
        except Exception as e:
            if self._errors and not isinstance(e, kmock.KubernetesError):
                self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
        match = _NAMESPACES_PATH.match(raw_request.path)
        if match is None:
            return await rendering.Request._parse(raw_request, id=len(self._requests))
        name = match.group("name")
        method = enums.method(raw_request.method)
        action = {
            enums.method.GET: enums.action.FETCH if name else enums.action.LIST,
            enums.method.POST: enums.action.CREATE,
            enums.method.PATCH: enums.action.UPDATE,
            enums.method.DELETE: enums.action.DELETE,
        }.get(method)
        if method == enums.method.GET and raw_request.query.get("watch") == "true":
            action = enums.action.WATCH
        body = await raw_request.read()
        return rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            body=body,
            text=body.decode(errors="replace"),
            data=json.loads(body) if body.strip() else None,
            action=action,
            resource=NAMESPACES,
            name=name,
        )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle, which changes objects before any reaction runs:
        # here state changes in the fallback handlers, so a reaction a test adds
        # (``kmock[...] << 409``) answers instead of the server, changing nothing.
        return await apps.RawHandler._handle(self, request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Failure",
                    "code": exc.status,
                    "reason": exc.reason,
                    "message": exc.message,
                    "details": exc.details or {},
                },
                status=exc.status,
            )
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": 500,
                "reason": "InternalError",
                "message": "".join(traceback.format_exception(exc)),
            },
            status=500,
        )

    # -- state ------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def compact(self) -> None:
        """Forget the change log, as etcd compaction does: older watches get 410 Gone."""
        self._horizon = self._rv
        self._log.clear()

    def expire_watches(self) -> None:
        """As an API server restarting after a compaction: every open watch ends, and
        resuming from any resourceVersion handed out so far answers 410 Gone."""
        self._epoch += 1
        self._rv += 1  # a revision no client has seen
        self.compact()

    def _info(self, request: rendering.Request) -> kmock.ResourceInfo:
        for resource in self._get_resources():
            if request.resource is not None and resource == request.resource:
                info: kmock.ResourceInfo = self.resources[resource]
                return info
        raise _status(404, "NotFound", f"the server could not find the resource {request.resource}")

    def _key(self, request: rendering.Request, name: str | None = None) -> Any:
        info = self._info(request)
        namespace = request.namespace if info.namespaced else None
        return (request.resource, namespace, name or request.name)

    def _current(self, key: Any) -> dict[str, Any]:
        if key not in self._objects or self._objects[key].deleted:
            kind = self.resources[key[0]].kind
            raise _status(404, "NotFound", f'{kind} "{key[2]}" not found')
        return copy.deepcopy(self._objects[key].raw)

    async def _record(self, key: Any, kind: str, obj: dict[str, Any]) -> None:
        """Store a new state of an object (DELETED removes it) and tell the watchers."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind == "DELETED":
            self._objects[key].delete()
        elif key in self._objects and not self._objects[key].deleted:
            self._objects[key].history.append(obj)
        elif key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        self._log.append(_Change(self._rv, key[0], key[1], {"type": kind, "object": obj}))
        if len(self._log) > EVENT_WINDOW:
            self._horizon = self._log.pop(0).rv
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    def _typed(self, request: rendering.Request, obj: dict[str, Any]) -> dict[str, Any]:
        assert request.resource is not None
        group, version = request.resource.group, request.resource.version
        obj.setdefault("apiVersion", f"{group}/{version}" if group else str(version))
        obj.setdefault("kind", self._info(request).kind)
        return obj

    # -- verbs ------------------------------------------------------------------

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        info = self._info(request)
        obj = self._typed(request, copy.deepcopy(request.data or {}))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if not meta.get("name"):
            raise _status(422, "Invalid", "metadata.name: Required value: name is required")
        if info.namespaced:
            if request.namespace is None:
                raise _status(400, "BadRequest", f"{info.kind} is namespaced: POST to a namespace")
            meta["namespace"] = request.namespace
        key = self._key(request, meta["name"])
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                raise _status(409, "AlreadyExists", f'{info.kind} "{meta["name"]}" already exists')
            for field in (*_SERVER_META, "resourceVersion"):
                meta.pop(field, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            if "status" in info.subresources:
                obj.pop("status", None)  # only the status subresource writes status
            await self._record(key, "ADDED", obj)
        return rendering.Response(status=201, payload=obj)

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        async with self._lock:
            return self._current(self._key(request))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        info = self._info(request)
        async with self._lock:
            items = [copy.deepcopy(o.raw) for o in self._matching(request)]
            rv = self._rv
        group, version = request.resource.group, request.resource.version  # type: ignore[union-attr]
        return {
            "apiVersion": f"{group}/{version}" if group else version,
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def _matching(self, request: rendering.Request) -> list[kmock.Object]:
        return [
            obj
            for (resource, namespace, _), obj in self._objects.items()
            if resource == request.resource
            and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
        ]

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        """PATCH: JSON merge patch (also for strategic merge) or a JSON patch list."""
        key = self._key(request)
        async with self._lock:
            old = self._current(key)
            try:
                patched = dict(dicts.patch_dict(old, request.data or {}))
            except Exception as exc:
                raise _status(422, "Invalid", f"cannot apply the patch: {exc}") from exc
            sent_rv = None
            if isinstance(request.data, dict):
                sent_rv = request.data.get("metadata", {}).get("resourceVersion")
            return await self._write(request, key, old, patched, sent_rv)

    async def _serve_replace(self, request: rendering.Request) -> rendering.Payload:
        """PUT: the whole object (or, on /status, the whole status)."""
        if request.resource is None or request.name is None:
            raise _status(405, "MethodNotAllowed", "PUT needs an object's URL")
        key = self._key(request)
        body = copy.deepcopy(request.data or {})
        async with self._lock:
            old = self._current(key)
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            return await self._write(request, key, old, body, sent_rv)

    async def _write(
        self,
        request: rendering.Request,
        key: Any,
        old: dict[str, Any],
        new: dict[str, Any],
        sent_rv: str | None,
    ) -> dict[str, Any]:
        info = self._info(request)
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {info.kind.lower()}s "{key[2]}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )
        if request.subresource == "status":
            new = {**old, "status": new.get("status")}
        elif "status" in info.subresources:
            new["status"] = old.get("status")
        if new.get("status") is None:
            new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for field in (*_SERVER_META, "name", "namespace", "resourceVersion"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        self._typed(request, new)
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        gone = meta.get("deletionTimestamp") and not meta.get("finalizers")
        await self._record(key, "DELETED" if gone else "MODIFIED", new)
        return new

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        key = self._key(request)
        async with self._lock:
            obj = self._current(key)
            meta = obj["metadata"]
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = _now()
                    await self._record(key, "MODIFIED", obj)
                return obj
            await self._record(key, "DELETED", obj)
            return obj

    # -- watch ------------------------------------------------------------------

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        info = self._info(request)
        params = request.params
        timeout = float(params["timeoutSeconds"]) if "timeoutSeconds" in params else None
        bookmarks = params.get("allowWatchBookmarks") == "true"
        since = params.get("resourceVersion") or ""
        deadline = time.monotonic() + timeout if timeout is not None else None
        yield b""  # send the headers: the client waits for them
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._lock:
            if since in ("", "0"):
                # "Start at most recent": the current objects as ADDED, then changes.
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o.raw)}
                    for o in self._matching(request)
                ]
                position = self._rv
            elif int(since) < self._horizon:
                initial = [self._gone(since)]
                position = -1
            else:
                initial, position = [], int(since)
        for event in initial:
            yield event
        if position < 0:
            return
        last_bookmark = time.monotonic()
        epoch = self._epoch
        while deadline is None or time.monotonic() < deadline:
            if self._epoch != epoch:
                return  # the server "restarted": the connection just ends
            for change in list(self._log):
                if change.rv <= position:
                    continue
                position = change.rv  # before yielding: the log may grow meanwhile
                if self._wanted(request, change):
                    yield change.event
            wait = self.bookmark_interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            async with self._changed:
                if wait > 0 and self._rv <= position:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
            if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                last_bookmark = time.monotonic()
                yield self._bookmark(request, info, position)
        if bookmarks:
            yield self._bookmark(request, info, position)

    def _wanted(self, request: rendering.Request, change: _Change) -> bool:
        return change.resource == request.resource and (
            request.namespace is None or change.namespace == request.namespace
        )

    def _bookmark(
        self, request: rendering.Request, info: kmock.ResourceInfo, position: int
    ) -> dict[str, Any]:
        """Everything up to ``position`` was sent: a client may resume from there."""
        obj = self._typed(request, {"metadata": {"resourceVersion": str(position)}})
        obj["kind"] = info.kind
        return {"type": "BOOKMARK", "object": obj}

    @staticmethod
    def _gone(since: str) -> dict[str, Any]:
        return {
            "type": "ERROR",
            "object": {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since}",
            },
        }


class KubeApiServer:
    """``KubeEmulator`` served on 127.0.0.1 from a background thread."""

    def __init__(self, bookmark_interval: float = 1.0) -> None:
        self.emulator = KubeEmulator(bookmark_interval=bookmark_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self.port = 0
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeApiServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Kubernetes API mock did not start within 30 s")
        if self._failure is not None:
            raise RuntimeError("the Kubernetes API mock failed to start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop (to read or change its state safely)."""
        assert self._loop is not None

        async def run() -> Any:
            async with self.emulator._lock:
                return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def expire_watches(self) -> None:
        self.call(self.emulator.expire_watches)

    def objects(
        self, resource: kmock.resource, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Current objects of a resource (deep copies), read on the server's loop."""

        def read() -> list[dict[str, Any]]:
            return [
                copy.deepcopy(obj.raw)
                for (res, ns, _), obj in self.emulator.objects.items()
                if res == resource and not obj.deleted and (namespace is None or ns == namespace)
            ]

        result: list[dict[str, Any]] = self.call(read)
        return result

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock"}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace},
                }
            ],
            "current-context": "kmock",
        }
        path.write_text(yaml.safe_dump(config))
        return path


def json_lines(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """Parse a raw watch response body into events."""
    text = b"".join(chunks).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
