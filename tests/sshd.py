"""A real OpenSSH server on 127.0.0.1 for the sharing tests (Debian's openssh-server).

It runs in the foreground as the current user with a throwaway host key and one authorised
client key, on a free port, and stops with the test session. DVC's SSH remote (`dvc-ssh`)
then reaches a directory over the network stack exactly as it would reach a team server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, server: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sshd exited ({server.returncode}): {server.stderr.read()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout_s} s")


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
    port = _free_port()
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
    server = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(port, server)
        yield SshServer(port, getuser(), workdir / "client_key")
    finally:
        server.terminate()
        server.wait(timeout=10)
