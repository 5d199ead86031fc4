"""The local-directory store and the object layout."""

import pytest

from d2v.errors import InvalidRequestError, ObjectNotFoundError
from d2v.store import LocalStore, batch_manifest_key, job_key, store_from_env, validate_job_id


def test_local_store_round_trip(tmp_path):
    s = LocalStore(tmp_path)
    s.put_bytes("jobs/abc/request.json", b"{}")
    assert s.get_bytes("jobs/abc/request.json") == b"{}"
    assert s.exists("jobs/abc/request.json") and not s.exists("jobs/abc/video.mp4")
    assert s.list("jobs/abc/") == ["jobs/abc/request.json"]
    assert s.url("jobs/abc/request.json").startswith("file://")
    s.delete("jobs/abc/request.json")
    with pytest.raises(ObjectNotFoundError, match="jobs/abc/request.json"):
        s.get_bytes("jobs/abc/request.json")


def test_layout_keys():
    assert job_key("j1", "video.mp4") == "jobs/j1/video.mp4"
    assert batch_manifest_key("my jobs") == "batches/my_jobs/manifest.jsonl"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "..", "x" * 200, "a b"])
def test_unsafe_job_ids_refused(bad):
    with pytest.raises(InvalidRequestError, match="invalid job id"):
        validate_job_id(bad)


def test_keys_cannot_escape_the_root(tmp_path):
    s = LocalStore(tmp_path / "root")
    with pytest.raises(InvalidRequestError):
        s.put_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_store_from_env_defaults_to_local(tmp_path):
    s = store_from_env({"D2V_DATA_DIR": str(tmp_path / "data")})
    assert isinstance(s, LocalStore) and s.root == (tmp_path / "data").resolve()
