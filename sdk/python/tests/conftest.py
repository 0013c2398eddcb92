"""A real ``onmemos serve`` for the whole test session: ``node bin/onmemos.js serve --port 0`` on 127.0.0.1 with
its own API keys and state directory, its address read from its stderr (as test/helpers/serve.ts does). At the
end it is stopped (SIGTERM, then SIGKILL), every session of its state directory removed, and the directory too."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(os.environ.get("ONMEMOS_REPO") or Path(__file__).resolve().parents[3])
BIN = REPO / "bin" / "onmemos.js"
NODE = os.environ.get("ONMEMOS_NODE") or shutil.which("node") or "node"
KEY = "py-sdk-test-key-0123456789abcdef"
SCOPED = "py-sdk-scoped-key-0123456789abcdef"
SCOPED_NAMESPACE = "only-this"


@dataclass
class Server:
    url: str
    port: int
    key: str
    scoped_key: str
    state_dir: str
    stderr: List[str]


def _cli_env(state_dir: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"ONMEMOS_STATE_DIR": state_dir, "ONMEMOS_SERVER": "", "ONMEMOS_LOG": "", "ONMEMOS_API_KEY": ""})
    return env


def _die_with_parent() -> None:
    """The server gets SIGTERM if pytest itself dies (Linux), so a killed run leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    # The state directory: the one the runner gives (it cleans up after a killed run too), else a new one.
    # Short, under the system's temporary directory: a session's agent socket path must fit in 108 bytes.
    state_dir = os.environ.get("ONMEMOS_PY_SDK_STATE_DIR") or tempfile.mkdtemp(prefix="onmemos-py-")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    env = _cli_env(state_dir)
    env["ONMEMOS_API_KEYS"] = f"{KEY};{SCOPED} {SCOPED_NAMESPACE}"
    child = subprocess.Popen(
        [NODE, str(BIN), "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=str(REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    lines: List[str] = []
    found = threading.Event()
    address: List[str] = []

    def read_stderr() -> None:
        assert child.stderr is not None
        for raw in child.stderr:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            m = re.search(r"serving the /v1 API on (http://\S+)", line)
            if m and not found.is_set():
                address.append(m.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=read_stderr, name="serve-stderr", daemon=True)
    reader.start()
    try:
        if not found.wait(30) or not address:
            raise RuntimeError(f"onmemos serve did not start: {''.join(lines)}")
        url = address[0]
        port = int(url.rsplit(":", 1)[1])
        yield Server(url=url, port=port, key=KEY, scoped_key=SCOPED, state_dir=state_dir, stderr=lines)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        reader.join(5)
        if child.stderr is not None:
            child.stderr.close()
        # Every session the tests left (none, when they pass), processes included; then the directory.
        subprocess.run(
            [NODE, str(BIN), "--local", "rm", "--all"],
            cwd=str(REPO),
            env=_cli_env(state_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[object]:
    from onmemos import OnMemOSClient

    with OnMemOSClient(server.url, server.key) as c:
        yield c


@pytest.fixture(scope="session", autouse=True)
def no_sessions_left(server: Server) -> Iterator[None]:
    """Every test removes what it made: the server has no session left at the end."""
    yield
    from onmemos import OnMemOSClient

    with OnMemOSClient(server.url, server.key) as c:
        left = c.list_sessions()
        for s in left:
            c.delete_session(s["id"])
    if left:
        print(f"sessions left behind by the tests: {[s['id'] for s in left]}", file=sys.stderr)
        raise AssertionError(f"sessions left behind: {[s['id'] for s in left]}")
