"""The container's entry point (deploy/docker-entrypoint.sh), run outside a container.

No image can be built here; the Dockerfile and the compose file are linted by .ci/run
(hadolint, docker compose config). What the image runs is this script, with the real
``tickwork`` of this environment.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.support.cli import Node

DEPLOY = Path(__file__).parent.parent / "deploy"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"


def entry_env(**extra: str) -> dict[str, str]:
    """The container's environment, with this venv's tickwork and Python on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TICKWORK_PYTHON"] = sys.executable
    env.update(extra)
    return env


def entry(*args: str, env: dict[str, str], code: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def entry_code(*args: str, env: dict[str, str]) -> int:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, env=env, timeout=30, check=False
    ).returncode


class EntryNode(Node):
    """The entry point started as the container starts it, with no arguments."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT)],
            cwd=cwd,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def test_starts_a_node_on_the_volume_and_stops_on_sigterm(tmp_path: Path) -> None:
    volume = tmp_path / "var-lib-tickwork"
    volume.mkdir()
    db = volume / "tickwork.db"
    # loopback: a public address would need an API token first (see the docs)
    env = entry_env(TICKWORK_DB=str(db), TICKWORK_HTTP=f"127.0.0.1:{free_port()}")
    with EntryNode(env, cwd=tmp_path) as node:
        node.wait_for(f"started on {db}")
        # the image's HEALTHCHECK against the real node's /healthz
        deadline = time.monotonic() + 10
        while entry_code("healthcheck", env=env) != 0:
            assert time.monotonic() < deadline, node.log
            time.sleep(0.1)
        # exec: the container's main process is the node itself, so SIGTERM reaches it
        cmdline = " ".join(psutil.Process(node.proc.pid).cmdline())
        assert "tickwork run" in cmdline, cmdline
        assert node.stop(signal.SIGTERM) == 0
    assert db.exists()


def test_options_go_to_run(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    proc = entry("--window", "soon", env=entry_env(TICKWORK_DB=str(db)), code=2)
    assert "Invalid value for '--window'" in proc.stderr
    proc = entry("run", "--window", "soon", env=entry_env(TICKWORK_DB=str(db)), code=2)
    assert "Invalid value for '--window'" in proc.stderr


def test_a_missing_volume_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "not-mounted" / "tickwork.db"
    proc = entry(env=entry_env(TICKWORK_DB=str(db)), code=1)
    assert proc.stderr == (
        f"error: the database directory {db.parent} does not exist (mount a volume there)\n"
    )


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="as root, a directory's mode does not stop writes, and setpriv is missing",
)
def test_a_volume_the_user_cannot_write_is_one_line() -> None:
    # pytest's own temporary directories are root's only: the other user could not look
    # in at all
    with tempfile.TemporaryDirectory() as top:
        Path(top).chmod(0o755)
        volume = Path(top) / "ro"
        volume.mkdir()
        volume.chmod(0o555)
        check_unwritable(volume)


def check_unwritable(volume: Path) -> None:
    argv = ["sh", str(ENTRYPOINT)]
    if os.geteuid() == 0:  # the check as the image's user would see it: not root
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=entry_env(TICKWORK_DB=str(volume / "tickwork.db")),
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"error: the database directory {volume} is not writable by uid" in proc.stderr
    assert "\n" not in proc.stderr.rstrip("\n")


def test_postgres_needs_no_volume(tmp_path: Path) -> None:
    """A PostgreSQL URI is not a directory to check: tickwork itself is reached."""
    env = entry_env(TICKWORK_DB="postgresql://nobody@127.0.0.1:1/none")
    proc = entry("run", "--window", "soon", env=env, code=2)
    assert "Invalid value for '--window'" in proc.stderr


def test_tickwork_commands_and_other_programs(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    env = entry_env(TICKWORK_DB=str(db))
    # `ls` is tickwork's, not /bin/ls
    proc = entry("ls", env=env, code=1)
    assert proc.stderr.startswith(f"error: no tickwork database at {db}")
    proc = entry("echo", "hello", env=env, code=0)
    assert proc.stdout == "hello\n"


# -- healthcheck ------------------------------------------------------------------------


@contextmanager
def http_server(status: int) -> Iterator[int]:
    """A local HTTP server answering ``GET /healthz`` with ``status``; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthcheck_asks_healthz_on_the_http_port() -> None:
    with http_server(200) as port:
        entry("healthcheck", env=entry_env(TICKWORK_HTTP=f"0.0.0.0:{port}"), code=0)
    with http_server(503) as port:
        proc = entry("healthcheck", env=entry_env(TICKWORK_HTTP=f"0.0.0.0:{port}"), code=1)
        assert "unhealthy" in proc.stderr
    port = free_port()
    proc = entry("healthcheck", env=entry_env(TICKWORK_HTTP=f"0.0.0.0:{port}"), code=1)
    assert f"unhealthy: http://127.0.0.1:{port}/healthz" in proc.stderr


def test_dockerfile_matches_the_entrypoint() -> None:
    """The image's settings the entry point and the docs rely on."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in text
    assert "USER 10001:10001" in text  # not root
    assert 'ENTRYPOINT ["docker-entrypoint.sh"]' in text
    assert 'CMD ["docker-entrypoint.sh", "healthcheck"]' in text
    assert "TICKWORK_DB=/var/lib/tickwork/tickwork.db" in text
    assert 'VOLUME ["/var/lib/tickwork"]' in text
    assert "TICKWORK_HTTP=0.0.0.0:8377" in text
