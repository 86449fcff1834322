"""Real servers on 127.0.0.1 for the sharing tests: OpenSSH and an S3-compatible store.

Each runs as its own process on a free port, is waited for (bounded in time) before a test
uses it, and is stopped when the test module ends. DVC's remotes (`dvc-ssh`, `dvc-s3`) then
reach it over the network stack exactly as they would reach a team's server or bucket.

- `ssh_server`: Debian's openssh-server in the foreground as the current user, with a
  throwaway host key and one authorised client key.
- `s3_server`: moto's standalone server (`moto[server]`), which speaks the S3 REST protocol
  that AWS, MinIO and Ceph speak; it keeps its buckets in memory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from getpass import getuser
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
MISSING = f"no OpenSSH server at {SSHD} (Debian: apt-get install openssh-server)"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    client_key: Path

    def url(self, directory: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{directory.resolve()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(name: str, port: int, server: subprocess.Popen, log: Path, timeout_s: float = 20.0) -> None:
    """Return once `server` accepts connections on `port`; fail if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited ({server.returncode}): {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s} s")


@contextmanager
def running(name: str, cmd: list[str], port: int, log: Path) -> Iterator[None]:
    """Run a server process for the duration of the block, stopping it however the block ends.

    Its output goes to `log` (a pipe nobody reads would stall a chatty server)."""
    with log.open("w") as sink:
        server = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_port(name, port, server, log)
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def ssh_server(workdir: Path) -> Iterator[SshServer]:
    """Start sshd on a free loopback port; yield how to reach it; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)], check=True
        )
    authorized = workdir / "authorized_keys"
    shutil.copy(workdir / "client_key.pub", authorized)
    authorized.chmod(0o600)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"PidFile {workdir / 'sshd.pid'}\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"  # the keys sit under the world-writable /tmp of a test run
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    with running("sshd", [SSHD, "-D", "-e", "-f", str(config)], port, workdir / "sshd.log"):
        yield SshServer(port, getuser(), workdir / "client_key")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    # moto accepts any credentials; DVC still needs some, as it would for a real bucket
    access_key_id: str = "team-key"
    secret_access_key: str = "team-secret"
    region: str = "us-east-1"

    def client(self):  # a boto3 S3 client for this server (boto3 comes with dvc-s3)
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; yield how to reach it; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running("moto_server", command, port, workdir / "moto.log"):
        yield S3Server(f"http://127.0.0.1:{port}")
