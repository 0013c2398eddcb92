"""The synchronous client: ``OnMemOSClient(base_url, api_key)``, the OnMemOS document's methods and context
managers on httpx, and the exec and JSON shell WebSockets on websockets' sync client."""

from __future__ import annotations

import inspect
import json
import os
import select
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from . import _core
from ._core import JSON, ExecResult
from ._terminal import default_term, on_resize, raw_mode, terminal_size
from .errors import (
    NotFoundError,
    OnmemosError,
    ProviderError,
    RequestTimeoutError,
    UnavailableError,
    error_from_response,
)

#: What `exec` accepts as stdin: bytes or text (sent, then EOF), a binary file or an iterable of bytes (streamed,
#: then EOF), True (open; write with ExecStream.write and end with close_stdin), or None (no stdin).
StdinSource = Union[None, bool, bytes, str, Iterable[bytes], Any]
OutputCallback = Callable[[bytes], None]

#: websockets 17 warns when its sync connect() is not a context manager unless asked for the connection itself
#: (legacy=True); older releases return it without the flag.
_CONNECT_EXTRA: Dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


class OnMemOSClient:
    """A client of an onmemos server (``onmemos serve``)::

        client = OnMemOSClient("http://localhost:8080", "your-api-key")
        with client.session(namespace="team-a", user="alice") as ws:
            print(ws.execute("python3 --version")["stdout"])

    ``timeout`` bounds each HTTP request (seconds; an execute waits for its command's timeout plus a margin);
    answers 503 are retried ``retries`` times with exponential backoff (nothing else is retried). The key is sent as
    the ``X-API-Key`` header, WebSockets included, and is never logged, shown or put in a URL.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        *,
        timeout: Optional[float] = 60.0,
        retries: int = 2,
        backoff: float = 0.25,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.base_url = _core.check_base_url(base_url)
        self._api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_core.headers(api_key),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OnMemOSClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OnMemOSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Optional[Mapping[str, Any]] = None,
        params: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json_body,
                    params=params,
                    timeout=timeout if timeout is not None else self.timeout,
                )
            except httpx.TimeoutException as e:
                raise RequestTimeoutError(f"{method} {path}: no answer from {self.base_url} in time ({type(e).__name__})") from None
            except httpx.TransportError as e:
                raise UnavailableError(f"cannot reach the onmemos server at {self.base_url}: {e}") from None
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(_core.retry_delay(attempt, self.backoff, response))
                attempt += 1
                continue
            return _core.parse_response(response)

    # --- the document's /v1/sessions API --------------------------------------------------------------------------

    def create_session(self, request: Optional[Mapping[str, Any]] = None, **fields: Any) -> JSON:
        """Creates a session: the document's fields (``provider`` auto, ``template``, ``namespace``, ``user``,
        ``ttl_minutes``, ``storage``, ``needs_ssh``, ``long_lived``, ``expected_duration_minutes``) and onmemos' own
        (``env``, ``network``, ``cpu``, ``memory``...), as a dict and/or keywords. Returns the session."""
        body = _core.merge_request(request, fields)
        return self._call("POST", "/v1/sessions", json_body=body, timeout=_create_timeout(self.timeout))

    def get_session(self, session_id: str) -> JSON:
        return self._call("GET", _core.session_path(session_id))

    def list_sessions(
        self, namespace: Optional[str] = None, user: Optional[str] = None, provider: Optional[str] = None
    ) -> List[JSON]:
        return self._call("GET", "/v1/sessions", params=_core.list_params(namespace, user, provider))

    def execute_session(self, session_id: str, command: str, timeout: Optional[float] = None) -> JSON:
        """Runs `command` under ``/bin/sh -c``: ``{"stdout", "stderr", "returncode", "success"}`` (returncode 124
        when `timeout`, in seconds, ran out)."""
        return self._call(
            "POST",
            _core.session_path(session_id, "execute"),
            json_body=_core.execute_body(command, timeout),
            timeout=_core.execute_timeout(timeout, self.timeout),
        )

    def delete_session(self, session_id: str) -> JSON:
        return self._call("DELETE", _core.session_path(session_id))

    def connect_session(self, session_id: str) -> JSON:
        """How to reach the session: ``exec``, ``json_shell``, ``web_terminal`` (paths on the server), ``shell``,
        ``url``, ``ssh``."""
        return self._call("GET", _core.session_path(session_id, "connect"))

    def start_session(self, session_id: str) -> JSON:
        return self._call("POST", _core.session_path(session_id, "start"), json_body={})

    def stop_session(self, session_id: str) -> JSON:
        return self._call("POST", _core.session_path(session_id, "stop"), json_body={})

    def extend_session(self, session_id: str, ttl_minutes: int) -> JSON:
        return self._call("POST", _core.session_path(session_id, "extend"), json_body={"ttl_minutes": ttl_minutes})

    # --- the document's legacy /v1/cloudrun/workspaces API -------------------------------------------------------

    def create_cloudrun_workspace(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "user",
        ttl_minutes: Optional[int] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
        **extra: Any,
    ) -> JSON:
        """``POST /v1/cloudrun/workspaces``: Cloud Run where the server has it; elsewhere the provider ``auto``
        picks stands in (``details.provider_reason`` says so)."""
        body = _core.legacy_create_body(template, namespace, user, ttl_minutes, storage_options, extra)
        return self._call("POST", "/v1/cloudrun/workspaces", json_body=body, timeout=_create_timeout(self.timeout))

    def get_cloudrun_workspace(self, workspace_id: str) -> JSON:
        return self._call("GET", _core.legacy_path(workspace_id))

    def delete_cloudrun_workspace(self, workspace_id: str) -> JSON:
        return self._call("DELETE", _core.legacy_path(workspace_id))

    def execute_in_cloudrun_workspace(self, workspace_id: str, command: str, timeout: Optional[float] = None) -> JSON:
        """``POST /v1/cloudrun/workspaces/{id}/execute?command=…&timeout=…``."""
        params: Dict[str, Any] = {"command": command}
        if timeout is not None:
            params["timeout"] = timeout
        return self._call(
            "POST",
            _core.legacy_path(workspace_id, "execute"),
            params=params,
            timeout=_core.execute_timeout(timeout, self.timeout),
        )

    # --- context managers ------------------------------------------------------------------------------------------

    @contextmanager
    def session(self, request: Optional[Mapping[str, Any]] = None, **fields: Any) -> Iterator[Workspace]:
        """A session deleted when the block ends, however it ends: ``with client.session(...) as ws:``."""
        with _deleting(Workspace(self, self.create_session(request, **fields))) as ws:
            yield ws

    @contextmanager
    def cloudrun_workspace_session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "user",
        ttl_minutes: Optional[int] = 60,
        storage_options: Optional[Mapping[str, Any]] = None,
        **extra: Any,
    ) -> Iterator[Workspace]:
        """The document's Cloud Run context manager, over the legacy routes; deleted when the block ends."""
        info = self.create_cloudrun_workspace(template, namespace, user, ttl_minutes, storage_options, **extra)
        with _deleting(Workspace(self, info, legacy=True)) as ws:
            yield ws

    @contextmanager
    def gke_workspace_session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "user",
        ttl_minutes: Optional[int] = 60,
        **extra: Any,
    ) -> Iterator[Workspace]:
        """The document's GKE context manager: a long-lived session, which the document's ``auto`` rule places on
        GKE; where the server has no GKE, the provider standing in is named in ``details.provider_reason``."""
        request = {"provider": "auto", "template": template, "namespace": namespace, "user": user, "long_lived": True}
        if ttl_minutes is not None:
            request["ttl_minutes"] = ttl_minutes
        with self.session(request, **extra) as ws:
            yield ws

    # --- streaming exec (v5.channel.k8s.io) -----------------------------------------------------------------------

    def _ws_connect(self, path: str, params: Sequence[Tuple[str, str]] = (), subprotocols: Sequence[str] = ()) -> ClientConnection:
        url = _core.ws_url(self.base_url, path, params)
        extra = {"X-API-Key": self._api_key} if self._api_key else {}
        try:
            return connect(
                url,
                additional_headers=extra,
                subprotocols=[*subprotocols] or None,  # type: ignore[list-item]
                open_timeout=self.timeout,
                max_size=_core.MAX_MESSAGE,
                user_agent_header=f"onmemos-python/{_core.__version__}",
                logger=_core.WS_LOGGER,
                **_CONNECT_EXTRA,
            )
        except InvalidStatus as e:
            raise _core.upgrade_error(e.response.status_code, bytes(e.response.body or b"")) from None
        except TimeoutError:
            raise RequestTimeoutError(f"the WebSocket {path} did not open in time") from None
        except OSError as e:
            raise UnavailableError(f"cannot reach the onmemos server at {self.base_url}: {e}") from None

    def exec_stream(
        self,
        session_id: str,
        argv: Sequence[str],
        *,
        stdin: StdinSource = None,
        tty: bool = False,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        cols: Optional[int] = None,
        rows: Optional[int] = None,
        term: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ExecStream:
        """Starts argv (passed exactly, no shell) and returns the stream: iterate it for ``("stdout"|"stderr",
        bytes)`` as they arrive; ``exit_code`` is set once iteration ends. Use it as a context manager."""
        wants_stdin = stdin is not None and stdin is not False
        params = _core.exec_params(
            argv, stdin=wants_stdin, tty=tty, env=env, cwd=cwd, cols=cols, rows=rows, term=term, timeout=timeout
        )
        ws = self._ws_connect(_core.session_path(session_id, "exec"), params, [_core.V5])
        return ExecStream(ws, stdin)

    def exec(
        self,
        session_id: str,
        argv: Sequence[str],
        *,
        stdin: StdinSource = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        tty: bool = False,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ExecResult:
        """Runs argv over the exec WebSocket: `on_stdout`/`on_stderr` get each chunk as it arrives; returns the
        exit code (128+N for signal N) with all of stdout and stderr. stdin (bytes, text, a binary file or an
        iterable of bytes) is sent, then EOF."""
        out: List[bytes] = []
        err: List[bytes] = []
        with self.exec_stream(session_id, argv, stdin=stdin, tty=tty, env=env, cwd=cwd, timeout=timeout) as stream:
            for kind, data in stream:
                (out if kind == "stdout" else err).append(data)
                callback = on_stdout if kind == "stdout" else on_stderr
                if callback is not None:
                    callback(data)
            return ExecResult(stream.finish(), b"".join(out), b"".join(err), stream.message)

    def shell(
        self,
        session_id: str,
        argv: Optional[Sequence[str]] = None,
        *,
        stdin_fd: Optional[int] = None,
        stdout_fd: Optional[int] = None,
    ) -> int:
        """Attaches this terminal to a shell in the session (the session's login shell unless argv is given), with
        a tty: raw mode, the window size followed (SIGWINCH), the terminal restored on exit. Returns the exit code."""
        in_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        out_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
        if argv is None:
            argv = (self.connect_session(session_id).get("shell") or {}).get("argv") or ["/bin/sh", "-l"]
        size_fd = in_fd if os.isatty(in_fd) else out_fd
        cols, rows = terminal_size(size_fd)
        stream = self.exec_stream(
            session_id, argv, stdin=True, tty=True, cols=cols, rows=rows, term=default_term()
        )
        wake_r, wake_w = os.pipe()

        def pump_stdin() -> None:
            try:
                while True:
                    ready, _, _ = select.select([in_fd, wake_r], [], [])
                    if wake_r in ready:
                        return
                    data = os.read(in_fd, _core.CHUNK)
                    if not data:
                        stream.close_stdin()
                        return
                    stream.write(data)
            except (OSError, ConnectionClosed, OnmemosError):
                return

        with stream, raw_mode(in_fd), on_resize(lambda: stream.resize(*terminal_size(size_fd))):
            reader = threading.Thread(target=pump_stdin, name="onmemos-shell-stdin", daemon=True)
            reader.start()
            try:
                for _kind, data in stream:
                    _write_all(out_fd, data)
            finally:
                os.write(wake_w, b"x")
                reader.join(timeout=5)
                os.close(wake_r)
                os.close(wake_w)
            return stream.finish()

    # --- the document's JSON shell ---------------------------------------------------------------------------------

    def json_shell(self, session_id: str, *, legacy: bool = False) -> JsonShell:
        """The document's JSON shell WebSocket (``/v1/sessions/{id}/shell``, or the legacy
        ``/v1/cloudrun/workspaces/{id}/shell``): ``with client.json_shell(id) as sh: sh.run("ls")``."""
        path = _core.legacy_path(session_id, "shell") if legacy else _core.session_path(session_id, "shell")
        return JsonShell(self._ws_connect(path))


def _create_timeout(timeout: Optional[float]) -> Optional[float]:
    """A create may take minutes on a cloud (an image pulled, a workstation started)."""
    return None if timeout is None else max(timeout, 900.0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextmanager
def _deleting(ws: Workspace) -> Iterator[Workspace]:
    """Yields ws and deletes it however the block ends; a failed delete never hides the block's own exception."""
    try:
        yield ws
    except BaseException:
        try:
            ws.delete()
        except Exception:
            pass
        raise
    ws.delete()


class Workspace:
    """A session from a context manager: ``execute`` (the document's), ``exec`` (streaming), ``delete``; the
    session's fields as ``ws["id"]`` or ``ws.info``."""

    def __init__(self, client: OnMemOSClient, info: JSON, *, legacy: bool = False) -> None:
        self.client = client
        self.info = info
        self.legacy = legacy
        self.deleted = False

    @property
    def id(self) -> str:
        return str(self.info["id"])

    def __getitem__(self, key: str) -> Any:
        return self.info[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.info.get(key, default)

    def __repr__(self) -> str:
        return f"Workspace({self.id!r})"

    def execute(self, command: str, timeout: Optional[float] = None) -> JSON:
        """``{"stdout", "stderr", "returncode", "success"}`` of `command` under ``/bin/sh -c``."""
        if self.legacy:
            return self.client.execute_in_cloudrun_workspace(self.id, command, timeout)
        return self.client.execute_session(self.id, command, timeout)

    def exec(self, argv: Sequence[str], **kwargs: Any) -> ExecResult:
        return self.client.exec(self.id, argv, **kwargs)

    def exec_stream(self, argv: Sequence[str], **kwargs: Any) -> ExecStream:
        return self.client.exec_stream(self.id, argv, **kwargs)

    def json_shell(self) -> JsonShell:
        return self.client.json_shell(self.id, legacy=self.legacy)

    def delete(self) -> None:
        """Deletes the session (once; one already gone is not an error here)."""
        if self.deleted:
            return
        self.deleted = True
        try:
            if self.legacy:
                self.client.delete_cloudrun_workspace(self.id)
            else:
                self.client.delete_session(self.id)
        except NotFoundError:
            pass


class ExecStream:
    """One command over the exec WebSocket. Iterate for ``(kind, bytes)`` chunks, kind ``"stdout"`` or
    ``"stderr"``, in the order they arrive; then ``exit_code`` (and ``message`` when it could not start).
    With ``stdin=True``, write with ``write()`` and end with ``close_stdin()``. Closing kills the command if it is
    still running."""

    def __init__(self, ws: ClientConnection, stdin: StdinSource) -> None:
        self._ws = ws
        self._state = _core._FrameState()
        self._stdin_thread: Optional[threading.Thread] = None
        self._stdin_closed = stdin is None or stdin is False
        self._stdin_error: Optional[BaseException] = None
        chunks = _core.stdin_chunks(stdin)
        if chunks is not None:
            self._stdin_thread = threading.Thread(target=self._pump, args=(chunks,), name="onmemos-exec-stdin", daemon=True)
            self._stdin_thread.start()

    def _pump(self, source: Any) -> None:
        try:
            if hasattr(source, "read"):
                while True:
                    data = source.read(_core.CHUNK)
                    if not data:
                        break
                    self.write(data)
            else:
                for data in source:
                    if data:
                        self.write(data)
            self.close_stdin()
        except ConnectionClosed:
            pass  # the command ended (or the connection did) before reading all of stdin
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self._stdin_error = e
            self.close()

    @property
    def exit_code(self) -> Optional[int]:
        return self._state.exit_code

    @property
    def message(self) -> Optional[str]:
        return self._state.message

    def write(self, data: Union[bytes, str]) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        for i in range(0, len(payload), _core.CHUNK):
            self._ws.send(_core.frame(_core.STDIN, payload[i : i + _core.CHUNK]))

    def close_stdin(self) -> None:
        """stdin EOF (``[255, 0]``)."""
        if not self._stdin_closed:
            self._stdin_closed = True
            self._ws.send(_core.STDIN_EOF)

    def resize(self, cols: int, rows: int) -> None:
        try:
            self._ws.send(_core.resize_frame(cols, rows))
        except ConnectionClosed:
            pass

    def signal(self, name: str) -> None:
        """Sends a signal (``"SIGINT"``...) to the command (onmemos' channel 16)."""
        self._ws.send(_core.frame(_core.SIGNAL, name.encode()))

    def __iter__(self) -> Iterator[Tuple[str, bytes]]:
        try:
            for message in self._ws:
                chunk = self._state.take(message)
                if chunk is not None:
                    yield chunk
        except ConnectionClosed as e:
            self._state.closed_reason = str(e)

    def finish(self) -> int:
        """The exit code, once iteration has ended (reading the rest first if it has not)."""
        for _ in self:
            pass
        if self._stdin_error is not None:
            raise ProviderError(f"reading stdin failed: {self._stdin_error}")
        return self._state.finish()

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._stdin_thread is not None and self._stdin_thread is not threading.current_thread():
            self._stdin_thread.join(timeout=5)


class JsonShell:
    """The document's JSON shell: ``run(command)`` sends ``{"type":"command"}`` and returns the
    ``command_result`` (``stdout``, ``stderr``, ``returncode``, ``success``); an ``error`` reply raises its typed
    error."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    def run(self, command: str, timeout: Optional[float] = None) -> JSON:
        message: Dict[str, Any] = {"type": "command", "command": command}
        if timeout is not None:
            message["timeout"] = timeout
        try:
            self._ws.send(json.dumps(message))
            reply = json.loads(self._ws.recv())
        except ConnectionClosed as e:
            raise ProviderError(f"the JSON shell closed: {e}") from None
        return _shell_reply(reply)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> JsonShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shell_reply(reply: Any) -> JSON:
    if isinstance(reply, dict) and reply.get("type") == "command_result":
        return reply
    if isinstance(reply, dict) and reply.get("type") == "error":
        err = reply.get("error") or {}
        code = err.get("code") if isinstance(err, dict) else None
        from .errors import ERROR_CODES

        return_status = ERROR_CODES.get(code or "", 500)
        raise error_from_response(return_status, reply)
    raise ProviderError(f"the JSON shell answered something unexpected: {str(reply)[:200]}")
