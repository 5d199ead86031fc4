"""The S3 store against a real S3 server (SeaweedFS started by the fixture)."""

import urllib.request

import pytest

from d2v.errors import ObjectNotFoundError, StoreUnavailableError
from d2v.s3store import PART_SIZE, S3Store
from d2v.store import store_from_env


def test_round_trip_list_delete(s3_store):
    s3_store.put_bytes("jobs/a1/request.json", b'{"x": 1}')
    s3_store.put_bytes("jobs/a1/status.json", b"{}")
    assert s3_store.get_bytes("jobs/a1/request.json") == b'{"x": 1}'
    assert s3_store.exists("jobs/a1/status.json") and not s3_store.exists("jobs/a1/video.mp4")
    assert s3_store.list("jobs/a1/") == ["jobs/a1/request.json", "jobs/a1/status.json"]
    s3_store.delete("jobs/a1/status.json")
    with pytest.raises(ObjectNotFoundError, match="status.json"):
        s3_store.get_bytes("jobs/a1/status.json")


def test_large_object_goes_multipart_and_comes_back_whole(s3_store, tmp_path):
    data = bytes(range(256)) * ((PART_SIZE + 3 * 2**20) // 256)  # more than one part
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    s3_store.put_file("jobs/big/video.mp4", path)
    assert s3_store.get_bytes("jobs/big/video.mp4") == data


def test_presigned_url_serves_the_object_and_sets_expiry(s3_store):
    s3_store.put_bytes("jobs/p/poster.jpg", b"\xff\xd8jpeg")
    url = s3_store.url("jobs/p/poster.jpg", expires_s=120)
    assert "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"\xff\xd8jpeg"
        assert r.headers["Content-Type"] == "image/jpeg"


def test_bucket_is_created_and_env_selects_s3(seaweed):
    env = seaweed.env("fresh-bucket-env")
    store = store_from_env(env)
    assert isinstance(store, S3Store)
    assert store.client.bucket_exists("fresh-bucket-env")


def test_unreachable_endpoint_is_a_named_error():
    with pytest.raises(StoreUnavailableError, match="cannot reach S3"):
        S3Store("127.0.0.1:1", "k", "s", "d2v")


def test_missing_credentials_named():
    with pytest.raises(StoreUnavailableError, match="D2V_S3_ACCESS_KEY"):
        store_from_env({"D2V_S3_ENDPOINT": "127.0.0.1:9"})
