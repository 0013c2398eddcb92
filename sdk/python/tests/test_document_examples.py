"""Every example of the document's "Python SDK Usage", "Context Manager Usage" and "WebSocket Shell Usage" runs
unchanged (URL, key and a made-up session id substituted) in its own Python process from the repository's root,
where ``from sdk.python.client import OnMemOSClient`` is the document's import, and its output is checked."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, Server
from document_examples import (
    CONTEXT_MANAGER_USAGE,
    PYTHON_SDK_USAGE,
    WEBSOCKET_SHELL_USAGE,
    substitute,
)

from onmemos import OnMemOSClient


def run_example(code: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, f"the example failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_the_examples_are_the_documents_word_for_word() -> None:
    # Only the URL and key placeholders are substituted, and nothing else of the text changes.
    code = substitute(PYTHON_SDK_USAGE, "http://127.0.0.1:1", "k" * 20)
    assert code.replace("http://127.0.0.1:1", "http://localhost:8080").replace("'" + "k" * 20 + "'", '"your-api-key"') == PYTHON_SDK_USAGE
    assert PYTHON_SDK_USAGE.startswith("from sdk.python.client import OnMemOSClient\n")


def test_python_sdk_usage(server: Server, client: OnMemOSClient) -> None:
    out = run_example(substitute(PYTHON_SDK_USAGE, server.url, server.key))
    m = re.match(r"Session created: (ws-my-project-developer-\S+)\n", out)
    assert m, out
    session_id = m.group(1)
    assert re.search(r"^Python version: Python 3\.\d+\.\d+\n\n", out, re.MULTILINE), out
    assert "Command: pwd\nOutput: /workspace\n\nSuccess: True\n\n" in out
    assert re.search(r"Command: ls -la\nOutput: total \d+\n.*\n\nSuccess: True\n\n", out, re.DOTALL), out
    assert "Command: echo 'Hello from OnMemOS!'\nOutput: Hello from OnMemOS!\n\nSuccess: True\n\n" in out
    assert re.search(
        r"Command: python -c 'import sys; print\(sys.version\)'\nOutput: 3\.\d+\.\d+ .*\n\nSuccess: True\n\n$", out
    ), out
    assert out.count("Success: True") == 4
    # "Clean up": the session is gone.
    assert [s["id"] for s in client.list_sessions(namespace="my-project")] == []
    assert session_id not in [s["id"] for s in client.list_sessions()]


def test_context_manager_usage(server: Server, client: OnMemOSClient) -> None:
    out = run_example(substitute(CONTEXT_MANAGER_USAGE, server.url, server.key))
    lines = out.split("\n")
    # pip cannot install into a session's system Python (Debian's externally managed one, and no index): the
    # example reports it as the document's code does; if it could, pandas would report its version.
    m = re.match(r"Install result: (True|False)$", lines[0])
    assert m, out
    if m.group(1) == "True":
        assert re.match(r"Pandas version: \d+\.\d+", lines[1]), out
    else:
        assert lines[1] == "Pandas version: ", out
    # No GPU here: nvidia-smi is not found, so its stdout is empty (as the document's "planned" GKE block shows it).
    assert re.search(r"^GPU info: ", out, re.MULTILINE), out
    # Both context managers deleted their sessions.
    assert client.list_sessions(namespace="data-analysis") == []
    assert client.list_sessions(namespace="ml-training") == []


def test_websocket_shell_usage(server: Server, client: OnMemOSClient) -> None:
    # The document's session id is made up: the example runs on a session made for it (the legacy route's).
    workspace = client.create_cloudrun_workspace("python", "my-project", "developer", ttl_minutes=10)
    try:
        client.execute_in_cloudrun_workspace(workspace["id"], "touch /workspace/notes.txt")
        out = run_example(substitute(WEBSOCKET_SHELL_USAGE, server.url, server.key, workspace["id"]))
    finally:
        client.delete_cloudrun_workspace(workspace["id"])
    assert re.match(r"Output: total \d+\n", out), out
    assert re.search(r" notes\.txt\n\nError: \nSuccess: True\n$", out), out


def test_the_documents_import_path_is_the_package() -> None:
    code = (
        "import onmemos, sdk.python.client as c; "
        "print(c.OnMemOSClient is onmemos.OnMemOSClient, c.NotFoundError is onmemos.NotFoundError)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout.strip() == "True True", r.stderr
