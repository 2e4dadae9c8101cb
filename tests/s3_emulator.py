"""A real S3-compatible server (moto) on 127.0.0.1, in its own process.

moto's ``ThreadedMotoServer`` serves from a thread, but delta-rs holds the GIL through some
blocking calls (``DeltaTable.is_deltatable``), so a server thread in the test process would
never answer them. The server runs in a child Python process instead (a fresh interpreter:
delta-rs must not be forked) that prints its port and stops when its stdin closes.

Credentials are always explicit (:func:`storage_options`) and the EC2 metadata endpoint is
switched off, so nothing ever reaches a cloud.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ACCESS_KEY = "AKIAFEATUREKITTEST"
SECRET_KEY = "featurekit-test-secret-0123456789"
REGION = "us-east-1"


_SERVER = """
import os, sys, logging
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the parent closes the pipe (or dies)
"""


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto in server mode; yields its endpoint URL (``http://127.0.0.1:<port>``)."""
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError("the moto S3 server did not start")
        yield f"http://127.0.0.1:{line}"
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` (moto does not check signatures, so a bare PUT does)."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")).read()


def storage_options(endpoint: str) -> dict[str, Any]:
    """Explicit credentials and endpoint, in delta-rs/object_store option names."""
    return {
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_region": REGION,
        "aws_endpoint": endpoint,
        "aws_allow_http": "true",
    }
