"""Where source files live: local paths, or objects in S3, Google Cloud Storage or Azure
Blob Storage, all read through ``pyarrow.fs``.

A source ``uri`` is one of

    data/*.parquet, /abs/file.npy, file://...   a local path or glob (relative paths
                                                against the release file's folder)
    s3://bucket/prefix/*.parquet                S3 and S3-compatible stores (MinIO)
    gs://bucket/key                             Google Cloud Storage
    az://container/key                          Azure Blob Storage

A glob matches object keys segment by segment (``*`` stays within one ``/``-separated
segment, ``**`` spans any number of them), in sorted key order. A uri naming a folder
(a prefix) is a hive-partitioned Parquet dataset: every ``.parquet`` file below it, its
``key=value`` folders becoming fields (``pyarrow.dataset`` discovers them).

This module owns the rules of object storage: which schemes there are, where their
credentials come from (``StorageSettings``), how a uri is shown (never with a secret),
and which failures are worth a retry (``storage_failure``).
"""

from __future__ import annotations

import fnmatch
import glob
import io
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from controller.errors import EmbrelError, SourceError, SourceUnavailable

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scheme://user:secret@bucket/key. Parsed by hand, not by urlsplit: a secret key may
# hold "/" (AWS keys are base64), which urlsplit would take for the start of the path,
# leaving part of the secret in what messages show.
_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^:@/]*):(?P<secret>[^@]*)@(?P<rest>.*)$",
    re.S,
)
REMOTE_SCHEMES = ("s3", "gs", "az")
PARQUET_SUFFIX = ".parquet"

# The settings object storage reads, by scheme: from a Kubernetes Secret
# (``spec.storage.secretRef``) over the controller's environment.
S3_SETTINGS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
)
GCS_SETTINGS = ("GOOGLE_OAUTH_ACCESS_TOKEN", "STORAGE_EMULATOR_HOST")
AZURE_SETTINGS = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ENDPOINT",
)
STORAGE_SETTINGS = S3_SETTINGS + GCS_SETTINGS + AZURE_SETTINGS
# Values that are secrets: scrubbed from every message, whatever the library said.
_SECRET_SETTINGS = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "AZURE_STORAGE_ACCOUNT_KEY",
    }
)
REDACTED = "<redacted>"

# Timeouts and attempts of one storage call: a source is read again on the next pass
# after a TemporaryError, so a call fails fast rather than holding the pass. (The AWS
# SDK applies the request timeout on Windows and macOS only.)
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
S3_ATTEMPTS = 3
# How long one GCS call retries before it gives up (the library's own default is minutes).
GCS_RETRY_S = 15.0
# How long a GOOGLE_OAUTH_ACCESS_TOKEN is taken to stay valid (a filesystem lives for one
# read of the sources; a token from the metadata server lives an hour).
GCS_TOKEN_LIFETIME_S = 3600.0
# Failures a retry can cure (pyarrow reports them as OSError text, with the SDK's
# error names): the store unreachable, a timeout, throttling or a 5xx.
_TRANSIENT = re.compile(
    r"NETWORK_CONNECTION|curlCode|Couldn't connect|Could not connect|Connection refused|"
    r"Fail to get a new connection|timed? ?out|Timeout|"
    r"SLOW_DOWN|THROTTL|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|REQUEST_TIME|"
    r"HTTP response code: 5\d\d|Unable to connect|Temporary failure|try again",
    re.IGNORECASE,
)
# What the store says about a permanent failure, in words a person acts on.
_PERMANENT = (
    (
        re.compile(r"ACCESS_DENIED|AccessDenied|PERMISSION_DENIED|AuthorizationPermission", re.I),
        "access denied",
    ),
    (
        re.compile(
            r"INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|UNAUTHENTICATED|"
            r"AuthorizationFailure|AuthenticationFailed",
            re.I,
        ),
        "the credentials were refused",
    ),
    (
        re.compile(r"NO_SUCH_BUCKET|ContainerNotFound|Bucket '[^']*' not found", re.I),
        "no such bucket",
    ),
    (re.compile(r"NO_SUCH_KEY|RESOURCE_NOT_FOUND|BlobNotFound|NOT_FOUND", re.I), "no such object"),
)


@dataclass(frozen=True)
class StorageSettings:
    """Object storage settings of one release: ``secret`` (the keys of the Secret in
    ``spec.storage.secretRef``) over ``environ`` (the controller's environment)."""

    secret: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None

    def get(self, name: str) -> str | None:
        env = os.environ if self.environ is None else self.environ
        return self.secret.get(name) or env.get(name) or None

    def secret_values(self) -> list[str]:
        return [v for name in _SECRET_SETTINGS if (v := self.get(name))]


# --- one file, wherever it is --------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: local (``local`` set) or an object in a store.

    ``display`` is what messages show: the local path as the spec resolves it, or the
    object's uri without credentials. ``partition`` holds the hive ``key=value`` pairs
    of the folders above a file of a Parquet dataset (fields of every row).
    """

    fs: Any  # pyarrow.fs.FileSystem
    path: str  # the path within ``fs``
    display: str
    local: Path | None = None
    partition: tuple[tuple[str, Any], ...] = ()
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        return self.display

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.path)[1]

    def sibling(self, name: str) -> SourceFile:
        """The file ``name`` in the same folder (not checked to exist)."""
        local = self.local.with_name(name) if self.local is not None else None
        display = f"{posixpath.dirname(self.display)}/{name}"
        return SourceFile(
            self.fs,
            posixpath.join(posixpath.dirname(self.path), name),
            display,
            local,
            (),
            self.secrets,
        )

    @property
    def parent(self) -> SourceFile:
        """The folder this file is in."""
        local = self.local.parent if self.local is not None else None
        display = posixpath.dirname(self.display.rstrip("/"))
        return SourceFile(self.fs, posixpath.dirname(self.path), display, local, (), self.secrets)

    def child(self, name: str) -> SourceFile:
        """The file ``name`` in this folder (not checked to exist)."""
        local = self.local / name if self.local is not None else None
        display = f"{self.display.rstrip('/')}/{name}"
        return SourceFile(
            self.fs, posixpath.join(self.path, name), display, local, (), self.secrets
        )

    def is_file(self) -> bool:
        if self.local is not None:
            return self.local.is_file()
        return bool(self._info().type == _file_type().File)

    def is_dir(self) -> bool:
        if self.local is not None:
            return self.local.is_dir()
        return bool(self._info().type == _file_type().Directory)

    def _info(self) -> Any:
        with storage_errors(f"cannot look up {self}", self.secrets):
            return self.fs.get_file_info(self.path)

    @contextmanager
    def open_binary(self) -> Iterator[IO[bytes]]:
        """The file as a buffered binary stream (lines, JSON, text)."""
        if self.local is not None:
            with self.local.open("rb") as fh:
                yield fh
            return
        with storage_errors(f"cannot read {self}", self.secrets):
            raw = self.fs.open_input_stream(self.path)
        with io.BufferedReader(raw, 1 << 20) as fh:
            yield fh

    def open_random(self) -> Any:
        """A random-access pyarrow file (Parquet, .npy ranges); the caller closes it."""
        with storage_errors(f"cannot read {self}", self.secrets):
            return self.fs.open_input_file(self.path)

    def identity(self) -> str | None:
        """What tells this object's content apart without reading it: size and ETag
        (S3), else size and modification time. None for a local file (hashed instead)."""
        if self.local is not None:
            return None
        with self.open_random() as fh, storage_errors(f"cannot look up {self}", self.secrets):
            meta = {_text(k).lower(): _text(v) for k, v in fh.metadata().items()}
            size = fh.size()
        tag = meta.get("etag") or str(self._info().mtime_ns)
        return f"{size}:{tag}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _file_type() -> Any:
    import pyarrow.fs as pafs

    return pafs.FileType


# --- failures --------------------------------------------------------------------------


def scrub(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with every secret value replaced (longest first: one may contain another)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def storage_failure(what: str, exc: BaseException, secrets: tuple[str, ...] = ()) -> EmbrelError:
    """The error to raise for ``exc`` from a storage call: temporary when a retry can
    cure it, else a SourceError naming the cause. Secrets never reach the message."""
    cause = scrub(str(exc), secrets)
    if isinstance(exc, EmbrelError):
        return exc
    if isinstance(exc, TimeoutError | ConnectionError) or _TRANSIENT.search(cause):
        return SourceUnavailable(f"{what}: object storage is unavailable ({cause}); retrying")
    for pattern, meaning in _PERMANENT:
        if pattern.search(cause):
            return SourceError(f"{what}: {meaning} ({cause})")
    return SourceError(f"{what}: {cause}")


def read_failure(path: SourceFile, what: str, exc: BaseException) -> Exception:
    """A local file's read error is bad input (SourceError); an object's may be the
    store being unreachable, which a retry cures (``storage_failure`` tells)."""
    if path.local is not None:
        return SourceError(f"{what}: {exc}; check that it is complete and readable")
    return storage_failure(what, exc, path.secrets)


@contextmanager
def storage_errors(what: str, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Storage and decoding errors inside become ``storage_failure``; ours pass through."""
    import pyarrow as pa

    try:
        yield
    except EmbrelError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise storage_failure(what, exc, secrets) from None


# --- resolving a uri -------------------------------------------------------------------


@dataclass(frozen=True)
class _Remote:
    scheme: str
    bucket: str
    key: str
    shown: str  # the uri without credentials
    fs: Any
    secrets: tuple[str, ...]

    def file(self, path: str, partition: tuple[tuple[str, Any], ...] = ()) -> SourceFile:
        return SourceFile(self.fs, path, f"{self.scheme}://{path}", None, partition, self.secrets)


def scheme_of(uri: str) -> str | None:
    """The uri's scheme (lower case), None for a plain path."""
    match = _SCHEME.match(uri.strip())
    return match.group(1).lower() if match else None


def is_remote(uri: str) -> bool:
    return scheme_of(uri) in REMOTE_SCHEMES


def shown(uri: str) -> str:
    """``uri`` safe for messages: credentials before ``@`` are replaced."""
    text = uri.strip()
    if match := _USERINFO.match(text):
        return f"{match['scheme']}://{REDACTED}@{match['rest']}"
    parts = urlsplit(text)
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=f"{REDACTED}@{parts.netloc.rpartition('@')[2]}").geturl()


def _split_credentials(uri: str) -> tuple[str, str, str]:
    """(user, secret, the uri without them), percent-escapes in the credentials decoded."""
    text = uri.strip()
    match = _USERINFO.match(text)
    if match is None:
        return "", "", text
    rest = f"{match['scheme']}://{match['rest']}"
    return unquote(match["user"]), unquote(match["secret"]), rest


def match_files(
    uri: str, base_dir: Path | None, settings: StorageSettings | None = None
) -> list[SourceFile]:
    """The files ``uri`` names: one file, a glob's matches or a Parquet dataset's files,
    sorted. SourceError when nothing is there; SourceUnavailable when the store is not."""
    if not is_remote(uri):
        return _local_files(uri, base_dir)
    remote = _remote(uri, settings or StorageSettings())
    with storage_errors(f"cannot read source {remote.shown}", remote.secrets):
        if glob.has_magic(remote.key):
            return _remote_glob(remote)
        return _remote_single(remote)


def one_file(
    uri: str, base_dir: Path | None, settings: StorageSettings | None = None
) -> SourceFile:
    """The file or folder ``uri`` names, without checking it exists (golden sets, BEIR)."""
    if not is_remote(uri):
        path = Path(_local_text(uri))
        path = base_dir / path if base_dir is not None and not path.is_absolute() else path
        return local_file(path)
    remote = _remote(uri, settings or StorageSettings())
    return remote.file(f"{remote.bucket}/{remote.key}".rstrip("/"))


def local_file(path: Path, partition: tuple[tuple[str, Any], ...] = ()) -> SourceFile:
    import pyarrow.fs as pafs

    return SourceFile(pafs.LocalFileSystem(), str(path.absolute()), str(path), path, partition)


def as_file(path: Path | SourceFile) -> SourceFile:
    """A local path as a SourceFile (readers take either)."""
    return local_file(path) if isinstance(path, Path) else path


def _local_text(uri: str) -> str:
    """Strip ``file://`` and expand ``~``; refuse a scheme that is neither local nor known."""
    text = uri.strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif scheme := scheme_of(text):
        raise SourceError(
            f"source {shown(uri)!r} uses {scheme}://, which embrel cannot read; give a local "
            "path or glob (data/*.parquet), or an object storage uri: "
            + ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        )
    if not text:
        raise SourceError("the source uri is empty; give a file path or glob")
    return os.path.expanduser(text)


def _local_files(uri: str, base_dir: Path | None) -> list[SourceFile]:
    text = _local_text(uri)
    base = base_dir if base_dir is not None and not os.path.isabs(text) else None
    if not glob.has_magic(text):
        path = base / text if base else Path(text)
        if path.is_dir():
            return _dataset_files(local_file(path), str(uri))
        if not path.is_file():
            raise SourceError(f"source file {path} does not exist (from {uri!r})")
        return [local_file(path)]
    # Escape the base so brackets in a directory name are not read as a pattern.
    pattern = os.path.join(glob.escape(str(base)), text) if base else text
    matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not [p for p in matches if not p.endswith(IDS_SUFFIX)]:
        where = f" (looked for {pattern})" if base else ""
        raise SourceError(
            f"no data files match the source pattern {uri!r}{where}; check the path, "
            "which is relative to the release file's directory"
        )
    # Sibling id files are read together with their vectors, never on their own.
    return [local_file(Path(p)) for p in matches if not p.endswith(IDS_SUFFIX)]


# --- object storage ----------------------------------------------------------------------


def _remote(uri: str, settings: StorageSettings) -> _Remote:
    user, password, plain = _split_credentials(uri)
    parts = urlsplit(plain)
    scheme = parts.scheme.lower()
    bucket = parts.netloc.rpartition("@")[2]
    key = unquote(parts.path).lstrip("/")
    where = f"{scheme}://{bucket}/{key}"
    if not bucket:
        raise SourceError(f"source {shown(uri)!r} names no bucket; write {scheme}://bucket/key")
    secrets = tuple(v for v in (password, *settings.secret_values()) if v)
    with storage_errors(f"cannot use {where}", secrets):
        fs = _filesystem(scheme, user, password, settings)
    return _Remote(scheme, bucket, key, where, fs, secrets)


def _filesystem(scheme: str, user: str, password: str, settings: StorageSettings) -> Any:
    if scheme == "s3":
        return _s3(user, password, settings)
    if scheme == "gs":
        return _gcs(settings)
    return _azure(user, password, settings)


def _gcs(settings: StorageSettings) -> Any:
    """``STORAGE_EMULATOR_HOST`` (``host:port`` or a URL, as Google's libraries take it)
    points at an emulator or a private endpoint: anonymous there unless a token is set."""
    import datetime

    import pyarrow.fs as pafs

    endpoint = _endpoint_url(settings.get("STORAGE_EMULATOR_HOST"), "http")
    token = settings.get("GOOGLE_OAUTH_ACCESS_TOKEN")
    expiry = None
    if token:
        # pyarrow takes a token only with its expiry, which a bare token does not carry.
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=GCS_TOKEN_LIFETIME_S
        )
    return pafs.GcsFileSystem(
        access_token=token,
        credential_token_expiration=expiry,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else None,
        anonymous=bool(endpoint) and not token,
        retry_time_limit=datetime.timedelta(seconds=GCS_RETRY_S),
    )


def _azure(user: str, password: str, settings: StorageSettings) -> Any:
    """``AZURE_STORAGE_ENDPOINT`` is the Blob service endpoint of the account when it is
    not ``https://ACCOUNT.blob.core.windows.net``: another cloud or a private endpoint
    (``https://ACCOUNT.blob.core.chinacloudapi.cn``), or an emulator, which takes the
    account in the path (``http://127.0.0.1:10000/devstoreaccount1``, Azurite's)."""
    import pyarrow.fs as pafs

    account = user or settings.get("AZURE_STORAGE_ACCOUNT_NAME") or ""
    endpoint = _endpoint_url(settings.get("AZURE_STORAGE_ENDPOINT"), "https")
    where: dict[str, str] = {}
    if endpoint:
        path = endpoint.path.strip("/")
        host = endpoint.netloc
        if path and path != account:
            raise SourceError(
                f"AZURE_STORAGE_ENDPOINT {endpoint.geturl()!r} has the path /{path}; give the "
                f"Blob service endpoint: https://{account or 'ACCOUNT'}.blob.<domain>, or an "
                f"emulator's http://host:port/{account or 'ACCOUNT'}"
            )
        if not path and account and host.lower().startswith(f"{account.lower()}."):
            # ACCOUNT.blob.<domain>: pyarrow puts the account in front of ".blob.<domain>".
            blob = host[len(account) :]
            dfs = blob.replace(".blob.", ".dfs.", 1)
        else:  # the account goes in the path
            blob = dfs = host
        where = {
            "blob_storage_authority": blob,
            "dfs_storage_authority": dfs,
            "blob_storage_scheme": endpoint.scheme,
            "dfs_storage_scheme": endpoint.scheme,
        }
    return pafs.AzureFileSystem(
        account_name=account,
        account_key=password or settings.get("AZURE_STORAGE_ACCOUNT_KEY"),
        **where,
    )


def _endpoint_url(value: str | None, default_scheme: str) -> Any:
    """``value`` as a parsed URL (``host:port`` taken as ``default_scheme://host:port``),
    None when unset."""
    if not value:
        return None
    text = value.strip()
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    parts = urlsplit(text)
    if not parts.netloc:
        raise SourceError(f"the object storage endpoint {value!r} names no host")
    return parts


def _s3(user: str, password: str, settings: StorageSettings) -> Any:
    import pyarrow.fs as pafs

    endpoint = settings.get("AWS_ENDPOINT_URL_S3") or settings.get("AWS_ENDPOINT_URL")
    parts = urlsplit(endpoint) if endpoint else None
    return pafs.S3FileSystem(
        access_key=user or settings.get("AWS_ACCESS_KEY_ID"),
        secret_key=password or settings.get("AWS_SECRET_ACCESS_KEY"),
        session_token=None if user else settings.get("AWS_SESSION_TOKEN"),
        region=settings.get("AWS_REGION") or settings.get("AWS_DEFAULT_REGION"),
        endpoint_override=parts.netloc if parts else None,
        scheme=parts.scheme if parts else "https",
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
    )


def _remote_single(remote: _Remote) -> list[SourceFile]:
    path = f"{remote.bucket}/{remote.key}".rstrip("/")
    info = remote.fs.get_file_info(path)
    types = _file_type()
    if info.type == types.File:
        return [remote.file(path)]
    if info.type == types.Directory:
        return _dataset_files(remote.file(path), remote.shown)
    _require_bucket(remote)
    raise SourceError(f"source object {remote.shown} does not exist (no such object)")


def _remote_glob(remote: _Remote) -> list[SourceFile]:
    """Objects whose keys match the glob, sorted: listed below the glob's fixed prefix."""
    import pyarrow.fs as pafs

    segments = remote.key.split("/")
    fixed = next(i for i, s in enumerate(segments) if glob.has_magic(s))
    base = "/".join([remote.bucket, *segments[:fixed]])
    pattern = segments[fixed:]
    recursive = len(pattern) > 1 or "**" in pattern
    selector = pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
    infos = remote.fs.get_file_info(selector)
    prefix = len(base) + 1
    found = sorted(
        i.path
        for i in infos
        if i.type == _file_type().File and _glob_match(i.path[prefix:].split("/"), pattern)
    )
    found = [path for path in found if not path.endswith(IDS_SUFFIX)]
    if not found:
        _require_bucket(remote)
        raise SourceError(
            f"no objects match the source pattern {remote.shown} (listed {remote.scheme}://{base}/)"
        )
    return [remote.file(path) for path in found]


def _require_bucket(remote: _Remote) -> None:
    if remote.fs.get_file_info(remote.bucket).type == _file_type().NotFound:
        raise SourceError(
            f"source {remote.shown}: the bucket {remote.bucket!r} does not exist (no such bucket)"
        )


def _glob_match(parts: list[str], pattern: list[str]) -> bool:
    """Segment-wise glob: ``*`` within one segment, ``**`` across any number."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _glob_match(parts[1:], pattern[1:])
    )


# Sibling id files of .npy vectors are read with them, never as data of their own.
IDS_SUFFIX = ".ids.npy"


# --- hive-partitioned Parquet datasets -------------------------------------------------------


def _dataset_files(folder: SourceFile, uri: str) -> list[SourceFile]:
    """Every .parquet file below ``folder`` with its hive partition values, sorted."""
    import pyarrow.dataset as ds

    with storage_errors(f"cannot read the Parquet dataset {folder}", folder.secrets):
        dataset = ds.dataset(
            folder.path,
            filesystem=folder.fs,
            format="parquet",
            partitioning="hive",
            exclude_invalid_files=False,
        )
        fragments = sorted(
            (f for f in dataset.get_fragments() if f.path.endswith(PARQUET_SUFFIX)),
            key=lambda f: f.path,
        )
        files = [
            _fragment_file(folder, f.path, ds.get_partition_keys(f.partition_expression))
            for f in fragments
        ]
    if not files:
        raise SourceError(
            f"source {shown(uri)!r} is the folder {folder} and holds no .parquet files; a folder "
            "is read as a (hive-partitioned) Parquet dataset, else give a file or a glob"
        )
    return files


def _fragment_file(folder: SourceFile, path: str, keys: Mapping[str, Any]) -> SourceFile:
    relative = path[len(folder.path) :].lstrip("/")
    partition = tuple(sorted(keys.items()))
    local = folder.local / relative if folder.local is not None else None
    display = f"{folder.display.rstrip('/')}/{relative}"
    return SourceFile(folder.fs, path, display, local, partition, folder.secrets)
