"""Where results live: one storage interface, two implementations.

    LocalStore   a directory (D2V_DATA_DIR, default ./d2v-data); the CLI's default
    S3Store      any S3 server through the minio SDK (d2v.s3store), when D2V_S3_ENDPOINT is set

`store_from_env()` picks one from the environment. The bucket layout is known in one
place only, the key functions below:

    jobs/{job_id}/input.<ext>  request.json  status.json  video.mp4  poster.jpg  manifest.json
    batches/{stem}/manifest.jsonl
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

from d2v.errors import InvalidRequestError, ObjectNotFoundError

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
}


def validate_job_id(job_id: str) -> str:
    """Job ids become key segments: letters, digits, '-' and '_' only (no '/', no '..')."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidRequestError(
            f"invalid job id {job_id!r}: use 1-128 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return job_id


def job_key(job_id: str, name: str) -> str:
    return f"jobs/{validate_job_id(job_id)}/{name}"


def batch_manifest_key(stem: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "batch"
    return f"batches/{safe}/manifest.jsonl"


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/") or "//" in key:
        raise InvalidRequestError(f"invalid object key {key!r}")
    return key


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


class VersionChanged(RuntimeError):
    """A conditional write (`Store.put_if_version`) found the object changed since it was read."""


ABSENT = ""  # the version of an object that does not exist: `put_if_version` with it creates it, once


class Store(ABC):
    """Objects by key. Implementations must make `put_*` atomic: a reader sees the whole
    old object or the whole new one, never a partial write. `get_versioned` and
    `put_if_version` are compare-and-set on one object (d2v.lifecycle's status writes)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises ObjectNotFoundError when the key does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        """Keys under a prefix, sorted; with `limit`, only the first `limit` of them (on S3,
        one listing page instead of all of them)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def url(self, key: str, expires_s: int = 3600) -> str:
        """A URL a client can GET the object from (file:// locally, presigned on S3)."""

    @abstractmethod
    def describe(self) -> str:
        """Where this store is, for messages: a directory or s3://bucket at endpoint."""

    def get_file(self, key: str, path: str | Path) -> None:
        Path(path).write_bytes(self.get_bytes(key))

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its version: a tag that changes with every write of it (an ETag on
        S3). Raises ObjectNotFoundError when the key does not exist."""

    @abstractmethod
    def put_if_version(self, key: str, data: bytes, version: str) -> None:
        """Write the object only if it is still at `version`, in one step (no write of another
        process can land between the compare and the write); VersionChanged when it is not.
        `ABSENT`: only if there is no such object yet (of two creators, one wins)."""

    def copy(self, source_key: str, key: str) -> None:
        """Copy an object within the store (a server-side copy on S3)."""
        self.put_bytes(key, self.get_bytes(source_key), content_type_for(key))

    def bounded(self, timeout_s: float) -> "Store":
        """This store with each call given up after about `timeout_s` (no retries): for writes
        that must land within a lease or not at all (d2v.lifecycle). A local directory does
        not hang, so it is itself."""
        return self


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def publish_mode(path: str | Path) -> None:
    """Give a temp file (mkstemp makes 0600) the mode a plain new file gets here, before
    it is renamed into place: results should read like any other file."""
    os.chmod(path, 0o666 & ~_UMASK)


class LocalStore(Store):
    """A directory tree mirroring the bucket layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._folder_locked(path):
            self._replace(path, data)

    @staticmethod
    @contextmanager
    def _folder_locked(path: Path):
        """An exclusive lock on the object's folder (flock, across processes), held by every
        write, so `put_if_version`'s compare and write are one step for the other writers."""
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _version(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, self._version(data)

    def put_if_version(self, key: str, data: bytes, version: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._folder_locked(path):
            try:
                current = self._version(path.read_bytes())
            except FileNotFoundError:
                current = ABSENT
            if current != version:
                raise VersionChanged(f"{key} changed since it was read")
            self._replace(path, data)

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            publish_mode(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        dest = self._path(key)
        if Path(path).resolve() == dest:
            return
        self.put_bytes(key, Path(path).read_bytes(), content_type)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {key!r} in {self.describe()}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        # Walk only the prefix's directory (active/, jobs/{id}/), not the whole store.
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(k for k in keys if k.startswith(prefix))[:limit]

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def describe(self) -> str:
        return str(self.root)


def store_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The D2V_* settings that choose a store, with the data directory made absolute, so
    another process (a Ray actor with another working directory) opens the same store."""
    env = os.environ if env is None else env
    settings = {k: v for k, v in env.items() if k.startswith("D2V_S3_")}
    if not settings.get("D2V_S3_ENDPOINT"):
        settings["D2V_DATA_DIR"] = str(Path(env.get("D2V_DATA_DIR") or "d2v-data").expanduser().resolve())
    return settings


def store_from_env(env: Mapping[str, str] | None = None) -> Store:
    """S3 when D2V_S3_ENDPOINT is set, else the local directory D2V_DATA_DIR (./d2v-data)."""
    env = os.environ if env is None else env
    if env.get("D2V_S3_ENDPOINT"):
        from d2v.s3store import S3Store

        return S3Store.from_env(env)
    return LocalStore(env.get("D2V_DATA_DIR") or "d2v-data")
