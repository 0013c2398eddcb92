"""What the sync and async clients share: URLs, headers, request shapes, response parsing, retry policy, and the
v5.channel.k8s.io framing of the exec WebSocket. No I/O here."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

import httpx

from .errors import ProviderError, UserError, error_from_response

__version__ = "0.1.0"

#: The exec WebSocket's subprotocol (Kubernetes remotecommand v5).
V5 = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE, SIGNAL, CLOSE = 0, 1, 2, 3, 4, 16, 255
#: stdin EOF: the v5 half-close of channel 0.
STDIN_EOF = bytes([CLOSE, STDIN])
#: The largest WebSocket message the server accepts is 1 MiB; stdin is sent in chunks well under it.
CHUNK = 64 * 1024
MAX_MESSAGE = 2 * 1024 * 1024
#: Margin added to a command's own timeout for the HTTP request that runs it.
EXECUTE_MARGIN = 30.0
#: The server's default command timeout (seconds).
DEFAULT_COMMAND_TIMEOUT = 120

JSON = Dict[str, Any]


class _RedactKey(logging.Filter):
    """websockets logs the handshake's headers at DEBUG: the API key is replaced before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and str(args[0]).lower() == "x-api-key":
            record.args = (args[0], "[redacted]", *args[2:])
        return True


#: The logger given to websockets' connections: the library's own messages, never the key.
WS_LOGGER = logging.getLogger("onmemos.websockets")
WS_LOGGER.addFilter(_RedactKey())


def check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"the server URL must be http:// or https://, not {base_url!r}")
    return base_url.rstrip("/")


def headers(api_key: Optional[str]) -> Dict[str, str]:
    h = {"User-Agent": f"onmemos-python/{__version__}", "Accept": "application/json"}
    if api_key:
        h["X-API-Key"] = api_key
    return h


def seg(value: str) -> str:
    """One path segment (a session id), percent-encoded."""
    return quote(str(value), safe="")


def session_path(session_id: str, action: str = "") -> str:
    return f"/v1/sessions/{seg(session_id)}" + (f"/{action}" if action else "")


def legacy_path(workspace_id: str, action: str = "") -> str:
    return f"/v1/cloudrun/workspaces/{seg(workspace_id)}" + (f"/{action}" if action else "")


def ws_url(base_url: str, path: str, params: Sequence[Tuple[str, str]] = ()) -> str:
    """The WebSocket URL of a path on the server (ws:// for http://, wss:// for https://); never carries the key."""
    scheme = "wss" if base_url.startswith("https:") else "ws"
    rest = base_url.split(":", 1)[1]
    query = f"?{urlencode(list(params))}" if params else ""
    return f"{scheme}:{rest}{path}{query}"


def merge_request(request: Optional[Mapping[str, Any]], fields: Mapping[str, Any]) -> JSON:
    body: JSON = dict(request or {})
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def list_params(namespace: Optional[str], user: Optional[str], provider: Optional[str]) -> Dict[str, str]:
    return {k: v for k, v in (("namespace", namespace), ("user", user), ("provider", provider)) if v}


def execute_body(command: str, timeout: Optional[float]) -> JSON:
    return {"command": command} if timeout is None else {"command": command, "timeout": timeout}


def execute_timeout(timeout: Optional[float], client_timeout: Optional[float]) -> Optional[float]:
    """The HTTP timeout of an execute: the command's own (or the server's default) plus a margin."""
    if client_timeout is None:
        return None
    return max(client_timeout, (timeout if timeout is not None else DEFAULT_COMMAND_TIMEOUT) + EXECUTE_MARGIN)


def legacy_create_body(
    template: str,
    namespace: str,
    user: str,
    ttl_minutes: Optional[int],
    storage_options: Optional[Mapping[str, Any]],
    extra: Mapping[str, Any],
) -> JSON:
    body: JSON = {"template": template, "namespace": namespace, "user": user}
    if ttl_minutes is not None:
        body["ttl_minutes"] = ttl_minutes
    if storage_options is not None:
        body["storage_options"] = dict(storage_options)
    body.update(extra)
    return body


def parse_response(response: httpx.Response) -> Any:
    """The JSON of an answer, or the typed error of an error answer."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
        if response.status_code < 400:
            raise ProviderError(
                f"the server answered HTTP {response.status_code} with something that is not JSON",
                status=response.status_code,
            ) from None
    if response.status_code >= 400:
        raise error_from_response(response.status_code, body)
    return body


def retry_delay(attempt: int, backoff: float, response: httpx.Response) -> float:
    """How long to wait before retry `attempt` (0-based) of an answer 503: Retry-After if given (at most 10 s),
    else exponential backoff with jitter."""
    after = response.headers.get("retry-after")
    if after is not None:
        try:
            return min(max(float(after), 0.0), 10.0)
        except ValueError:
            pass
    return backoff * (2**attempt) * (0.5 + random.random() / 2)


def exec_params(
    argv: Sequence[str],
    *,
    stdin: bool,
    tty: bool,
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    cols: Optional[int],
    rows: Optional[int],
    term: Optional[str],
    timeout: Optional[float],
) -> List[Tuple[str, str]]:
    if isinstance(argv, (str, bytes)) or len(argv) == 0:
        raise UserError("argv must be a non-empty list of strings (use execute_session for a shell command line)")
    params = [("command", str(a)) for a in argv]
    if stdin:
        params.append(("stdin", "1"))
    if tty:
        params.append(("tty", "1"))
    for k, v in (env or {}).items():
        params.append(("env", f"{k}={v}"))
    if cwd:
        params.append(("workdir", cwd))
    if cols:
        params.append(("cols", str(cols)))
    if rows:
        params.append(("rows", str(rows)))
    if term:
        params.append(("term", term))
    if timeout is not None:
        params.append(("timeout", str(int(timeout))))
    return params


def frame(channel: int, payload: bytes = b"") -> bytes:
    return bytes([channel]) + payload


def resize_frame(cols: int, rows: int) -> bytes:
    return frame(RESIZE, json.dumps({"Width": cols, "Height": rows}).encode())


def exit_from_status(payload: bytes) -> Tuple[int, Optional[str]]:
    """The exit code in a metav1.Status from channel 3 (as src/exec/v5.ts exitFromStatus reads it)."""
    try:
        status = json.loads(payload.decode("utf-8", "replace"))
    except ValueError:
        return 1, f"unreadable status: {payload[:200]!r}"
    if not isinstance(status, dict):
        return 1, "unreadable status"
    if status.get("status") == "Success":
        return 0, None
    causes = (status.get("details") or {}).get("causes") or []
    code: Optional[int] = None
    for cause in causes:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                code = int(str(cause.get("message", "")))
            except ValueError:
                code = None
            break
    if status.get("reason") == "NonZeroExitCode" and code is not None and 0 <= code <= 255:
        return code, None
    message = status.get("message") if isinstance(status.get("message"), str) else None
    if status.get("reason") == "InternalError":
        return 125, message or "the command could not start"
    return 1, message or "the remote side reported a failure"


@dataclass
class ExecResult:
    """The outcome of a streamed command: its exit code (128+N when killed by signal N), and what it wrote."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    #: The server's message when the command could not start or the status was not an exit code.
    message: Optional[str] = None

    @property
    def returncode(self) -> int:
        return self.exit_code

    @property
    def success(self) -> bool:
        return self.exit_code == 0


@dataclass
class _FrameState:
    """What the frames of one exec connection have said so far."""

    exit_code: Optional[int] = None
    message: Optional[str] = None
    closed_reason: str = ""
    extra: List[bytes] = field(default_factory=list)

    def take(self, message: Any) -> Optional[Tuple[str, bytes]]:
        """One WebSocket message: an output chunk to hand on, or None (status, or nothing of ours)."""
        if not isinstance(message, (bytes, bytearray, memoryview)):
            return None
        data = bytes(message)
        if not data:
            return None
        channel, payload = data[0], data[1:]
        if channel in (STDOUT, STDERR) and not payload:
            return None  # a server may open each stream with an empty frame
        if channel == STDOUT:
            return ("stdout", payload)
        if channel == STDERR:
            return ("stderr", payload)
        if channel == STATUS:
            self.exit_code, self.message = exit_from_status(payload)
        return None

    def finish(self) -> int:
        if self.exit_code is None:
            raise ProviderError(
                "the exec connection closed before the command's exit status" + (f": {self.closed_reason}" if self.closed_reason else "")
            )
        return self.exit_code


def upgrade_error(status: int, body: bytes) -> Exception:
    """The typed error of a refused WebSocket upgrade (a plain HTTP answer with the API's error body)."""
    try:
        parsed = json.loads(body.decode("utf-8", "replace")) if body else None
    except ValueError:
        parsed = None
    return error_from_response(status, parsed)


def stdin_chunks(data: Any) -> Optional[Any]:
    """bytes/str as a list of chunks; anything else (file, iterable) as given; None for no stdin."""
    if data is None or data is False or data is True:
        return None
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        b = bytes(data)
        return [b[i : i + CHUNK] for i in range(0, len(b), CHUNK)]
    return data
