"""Streaming exec over the v5.channel.k8s.io WebSocket (stdin, stdin EOF, stdout and stderr as they arrive, exit
codes, signals), the interactive shell on a pty, and the document's JSON shell."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import List, Tuple

import pytest
from conftest import REPO, Server

from onmemos import AuthError, ConflictError, NotFoundError, OnMemOSClient, UserError, Workspace


@pytest.fixture(scope="module")
def ws(client: OnMemOSClient) -> Iterator[Workspace]:
    with client.session(namespace="py-exec", user="u", ttl_minutes=30) as w:
        yield w


def test_exit_codes_stdout_and_stderr_apart(client: OnMemOSClient, ws: Workspace) -> None:
    r = client.exec(ws.id, ["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (r.exit_code, r.stdout, r.stderr) == (5, b"out\n", b"err\n")
    assert r.returncode == 5 and not r.success
    assert client.exec(ws.id, ["true"]).exit_code == 0
    # argv is passed exactly, no shell in between.
    assert client.exec(ws.id, ["printf", "%s|", "a b", "$HOME", "'q'"]).stdout == b"a b|$HOME|'q'|"
    # Killed by a signal: 128+N.
    assert client.exec(ws.id, ["sh", "-c", "kill -KILL $$"]).exit_code == 137
    # A command that does not exist: the shell's 127, or the server's 125 with a message.
    missing = client.exec(ws.id, ["no-such-command-here"])
    assert missing.exit_code in (125, 126, 127), missing
    r = client.exec(ws.id, ["sh", "-c", 'echo "$X $(pwd)"'], env={"X": "y"}, cwd="/tmp")
    assert r.stdout == b"y /tmp\n"


def test_stdin_then_eof(client: OnMemOSClient, ws: Workspace) -> None:
    r = client.exec(ws.id, ["sh", "-c", "wc -l; echo done >&2"], stdin=b"a\nb\nc\n")
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"3\n", b"done\n")
    assert client.exec(ws.id, ["cat"], stdin="text in\n").stdout == b"text in\n"
    # A file, read to its end, then EOF.
    assert client.exec(ws.id, ["wc", "-c"], stdin=io.BytesIO(b"x" * 200_000)).stdout.strip() == b"200000"
    # An iterable of chunks.
    assert client.exec(ws.id, ["cat"], stdin=iter([b"1", b"2", b"3"])).stdout == b"123"
    # Empty stdin is an immediate EOF, and no stdin at all is one too: cat ends rather than wait.
    assert client.exec(ws.id, ["cat"], stdin=b"").stdout == b""
    assert client.exec(ws.id, ["cat"]).exit_code == 0


def test_large_stdin_and_output_round_trip(client: OnMemOSClient, ws: Workspace) -> None:
    data = os.urandom(3 * 1024 * 1024)
    r = client.exec(ws.id, ["cat"], stdin=data)
    assert r.exit_code == 0 and r.stdout == data


def test_output_arrives_as_it_is_produced(client: OnMemOSClient, ws: Workspace) -> None:
    # The command waits for a line on stdin before finishing: its first output must reach us while it still runs.
    with client.exec_stream(ws.id, ["sh", "-c", "echo first; read line; echo \"got $line\"; echo e >&2"], stdin=True) as s:
        chunks: List[Tuple[str, bytes]] = []
        it = iter(s)
        kind, data = next(it)
        assert (kind, data) == ("stdout", b"first\n")
        assert s.exit_code is None  # still running, waiting for us
        s.write(b"hello\n")
        s.close_stdin()
        chunks.extend(it)
        assert s.finish() == 0
    assert b"".join(d for k, d in chunks if k == "stdout") == b"got hello\n"
    assert b"".join(d for k, d in chunks if k == "stderr") == b"e\n"


def test_callbacks_see_each_chunk(client: OnMemOSClient, ws: Workspace) -> None:
    out: List[bytes] = []
    err: List[bytes] = []
    r = client.exec(
        ws.id,
        ["sh", "-c", "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.05; done"],
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert r.exit_code == 0
    assert b"".join(out) == r.stdout == b"1\n2\n3\n"
    assert b"".join(err) == r.stderr == b"e1\ne2\ne3\n"


def test_signal_and_tty(client: OnMemOSClient, ws: Workspace) -> None:
    with client.exec_stream(ws.id, ["sh", "-c", "trap 'echo trapped; exit 7' INT; echo ready; while :; do sleep 0.1; done"], stdin=True) as s:
        it = iter(s)
        assert next(it) == ("stdout", b"ready\n")
        s.signal("SIGINT")
        rest = b"".join(d for _, d in it)
        assert rest == b"trapped\n" and s.finish() == 7
    r = client.exec(ws.id, ["sh", "-c", "test -t 1 && stty size"], tty=True)
    assert r.exit_code == 0


def test_exec_errors_are_typed(server: Server, client: OnMemOSClient, ws: Workspace) -> None:
    with pytest.raises(NotFoundError):
        client.exec("ws-none-x-1-abcd", ["true"])
    with pytest.raises(AuthError), OnMemOSClient(server.url, "wrong-key-0123456789abcdef") as wrong:
        wrong.exec(ws.id, ["true"])
    with pytest.raises(UserError):
        client.exec(ws.id, [])
    with pytest.raises(UserError):
        client.exec(ws.id, "echo not-a-list")
    with pytest.raises(NotFoundError):
        client.json_shell("ws-none-x-1-abcd")
    assert ConflictError.default_code == "conflict"


def test_json_shell(client: OnMemOSClient, ws: Workspace) -> None:
    with client.json_shell(ws.id) as sh:
        assert sh.run("echo one; echo two >&2; exit 2") == {
            "type": "command_result",
            "stdout": "one\n",
            "stderr": "two\n",
            "returncode": 2,
            "success": False,
        }
        assert sh.run("sleep 5", timeout=1)["returncode"] == 124
        with pytest.raises(UserError):
            sh.run("x" * 200_000)
        assert sh.run("echo still here")["stdout"] == "still here\n"


SHELL_SCRIPT = """
import sys
from onmemos import OnMemOSClient
with OnMemOSClient(sys.argv[1], sys.argv[2]) as c:
    code = c.shell(sys.argv[3])
print(f"[exit {code}]", flush=True)
import termios
sys.exit(0 if termios.tcgetattr(0)[3] & termios.ECHO else 99)
"""


def _read_until(fd: int, needle: bytes, seen: bytearray, limit: float = 60.0) -> bytes:
    deadline = time.monotonic() + limit
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen in the terminal: {bytes(seen)[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen.extend(chunk)
    return bytes(seen)


def test_shell_attaches_a_terminal_raw_resized_and_restored(server: Server, ws: Workspace) -> None:
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-c", SHELL_SCRIPT, server.url, server.key, ws.id],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=str(REPO),
        start_new_session=True,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(slave)
    seen = bytearray()
    try:
        # Typed only once the remote shell prompts: until the terminal is raw, the local tty would take it.
        _read_until(master, b"$ ", seen)
        os.write(master, b"stty size; echo $TERM; echo mark-$((6*7))\r")
        _read_until(master, b"mark-42", seen)
        assert b"33 111" in seen and b"xterm" in seen
        # The local window changes: SIGWINCH reaches the client, which sends the new size.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        child.send_signal(signal.SIGWINCH)
        for _ in range(60):  # the resize and the typing travel apart: ask until the new size shows (bounded)
            os.write(master, b"stty size\r")
            try:
                _read_until(master, b"40 120", seen, limit=1.0)
                break
            except AssertionError:
                continue
        assert b"40 120" in seen, bytes(seen)
        os.write(master, b"exit 3\r")
        _read_until(master, b"[exit 3]", seen)
        assert child.wait(30) == 0, bytes(seen)  # 0: the terminal has its echo back (restored from raw mode)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        os.close(master)
