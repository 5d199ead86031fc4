"""The S3 implementation of `d2v.store.Store`, through the minio SDK (MinIO in
production; SeaweedFS in tests; any S3 server works).

Configuration (environment, the same names in Serve configs and batch jobs):
    D2V_S3_ENDPOINT         host:port of the S3 API
    D2V_S3_ACCESS_KEY, D2V_S3_SECRET_KEY
    D2V_S3_BUCKET           default d2v; created when missing
    D2V_S3_SECURE           1 for https (default 0)
    D2V_S3_REGION           default us-east-1 (saves the SDK a region look-up per presign)
    D2V_S3_PUBLIC_ENDPOINT  host:port clients use, when it differs from the cluster's
                            (presigned URLs are signed for the host they name)
"""

from __future__ import annotations

import os

import io
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Mapping

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from d2v.errors import ObjectNotFoundError, StoreUnavailableError
from d2v.store import Store, VersionChanged, check_key, content_type_for

# Objects above this go up in parts of this size: a retry resends one part, not the video.
PART_SIZE = 16 * 1024 * 1024


def _http_client(timeout_s: float | None = None) -> urllib3.PoolManager:
    """Bounded retries with backoff for transient failures; a dead endpoint is reported
    in about a second instead of the SDK's default half a minute of retries. A frozen one
    is given up on after D2V_S3_TIMEOUT_S (default 30 s) per read, not the 120 s that held
    every request of the farm. With `timeout_s`: no retries, and connect and each read
    within it (`S3Store.bounded`)."""
    if timeout_s is not None:
        timeout, retry = urllib3.Timeout(connect=timeout_s, read=timeout_s), urllib3.Retry(total=0, read=0)
    else:
        retry = urllib3.Retry(total=3, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504])
        try:
            read_s = float(os.environ.get("D2V_S3_TIMEOUT_S", 30))
        except ValueError:
            read_s = 30.0
        timeout = urllib3.Timeout(connect=5, read=read_s)
    return urllib3.PoolManager(
        timeout=timeout, retries=retry, maxsize=16,
        cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
    )


class S3Store(Store):
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str = "d2v",
        *,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
    ):
        self.endpoint, self.bucket, self.secure = endpoint, bucket, secure
        self._minio_args = dict(access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        self.client = Minio(endpoint, **self._minio_args, http_client=_http_client())
        self._presigner = (
            Minio(public_endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
            if public_endpoint
            else self.client
        )
        self._ensure_bucket()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "S3Store":
        missing = [k for k in ("D2V_S3_ACCESS_KEY", "D2V_S3_SECRET_KEY") if not env.get(k)]
        if missing:
            raise StoreUnavailableError(f"D2V_S3_ENDPOINT is set but {' and '.join(missing)} is not")
        return cls(
            env["D2V_S3_ENDPOINT"],
            env["D2V_S3_ACCESS_KEY"],
            env["D2V_S3_SECRET_KEY"],
            env.get("D2V_S3_BUCKET") or "d2v",
            secure=env.get("D2V_S3_SECURE", "0") in ("1", "true", "yes"),
            region=env.get("D2V_S3_REGION") or "us-east-1",
            public_endpoint=env.get("D2V_S3_PUBLIC_ENDPOINT") or None,
        )

    def _ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as e:
            if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreUnavailableError(f"S3 bucket {self.bucket!r} at {self.endpoint}: {e.code}: {e.message}") from None
        except Exception as e:  # connection refused, DNS, TLS
            raise StoreUnavailableError(f"cannot reach S3 at {self.endpoint}: {e}") from None

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.client.put_object(
            self.bucket, check_key(key), io.BytesIO(data), len(data),
            content_type=content_type or content_type_for(key), part_size=PART_SIZE,
        )

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        self.client.fput_object(
            self.bucket, check_key(key), str(path), content_type=content_type or content_type_for(key),
            part_size=PART_SIZE,
        )

    def get_bytes(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            response = self.client.get_object(self.bucket, check_key(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFoundError(f"no object {key!r} in {self.describe()}") from None
            raise
        try:
            return response.read(), response.headers["ETag"]
        finally:
            response.close()
            response.release_conn()

    def put_if_version(self, key: str, data: bytes, version: str) -> None:
        """A PUT with `If-Match: <ETag>`: the server compares and writes in one step (AWS S3,
        MinIO and SeaweedFS answer 412 when the object changed). minio-py's put_object turns
        unknown headers into user metadata, so this goes through its request method with the
        header as is; small objects only (one PUT, no multipart)."""
        # (If-None-Match: * for ABSENT: the PUT creates the object or is refused with 412.)
        headers = {"Content-Type": content_type_for(key), **({"If-Match": version} if version else {"If-None-Match": "*"})}
        try:
            self.client._put_object(self.bucket, check_key(key), data, headers)
        except S3Error as e:
            if e.code == "PreconditionFailed" or (e.response is not None and e.response.status == 412):
                raise VersionChanged(f"{key} changed since it was read") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, check_key(key))
            return True
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        # S3 lists in key order, page by page: stop after `limit` keys, not after all pages.
        objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
        return sorted(o.object_name for o in itertools.islice(objects, limit))

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, check_key(key))

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self._presigner.presigned_get_object(self.bucket, check_key(key), expires=timedelta(seconds=expires_s))

    def describe(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint}"

    def copy(self, source_key: str, key: str) -> None:
        from minio.commonconfig import CopySource

        try:
            self.client.copy_object(self.bucket, check_key(key), CopySource(self.bucket, check_key(source_key)))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFoundError(f"no object {source_key!r} in {self.describe()}") from None
            raise

    def bounded(self, timeout_s: float) -> "S3Store":
        copy = object.__new__(S3Store)
        copy.__dict__.update(self.__dict__)
        copy.client = Minio(self.endpoint, **self._minio_args, http_client=_http_client(timeout_s))
        return copy
