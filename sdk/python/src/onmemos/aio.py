"""The asynchronous client: ``AsyncOnMemOSClient``, the same surface as :class:`onmemos.OnMemOSClient` with
``await`` and ``async with``, on httpx's AsyncClient and websockets' asyncio client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Dict, List, Optional, Tuple, Union

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import _core
from ._core import JSON, ExecResult
from ._terminal import default_term, raw_mode, terminal_size
from .client import OutputCallback, StdinSource, _create_timeout, _shell_reply, _write_all
from .errors import NotFoundError, ProviderError, RequestTimeoutError, UnavailableError


class AsyncOnMemOSClient:
    """``async with AsyncOnMemOSClient(url, key) as client:`` — every method of OnMemOSClient, awaited; the context
    managers are ``async with``."""

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        *,
        timeout: Optional[float] = 60.0,
        retries: int = 2,
        backoff: float = 0.25,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.base_url = _core.check_base_url(base_url)
        self._api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_core.headers(api_key),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AsyncOnMemOSClient({self.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncOnMemOSClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(
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
                response = await self._http.request(
                    method, path, json=json_body, params=params, timeout=timeout if timeout is not None else self.timeout
                )
            except httpx.TimeoutException as e:
                raise RequestTimeoutError(f"{method} {path}: no answer from {self.base_url} in time ({type(e).__name__})") from None
            except httpx.TransportError as e:
                raise UnavailableError(f"cannot reach the onmemos server at {self.base_url}: {e}") from None
            if response.status_code == 503 and attempt < self.retries:
                await asyncio.sleep(_core.retry_delay(attempt, self.backoff, response))
                attempt += 1
                continue
            return _core.parse_response(response)

    async def create_session(self, request: Optional[Mapping[str, Any]] = None, **fields: Any) -> JSON:
        body = _core.merge_request(request, fields)
        return await self._call("POST", "/v1/sessions", json_body=body, timeout=_create_timeout(self.timeout))

    async def get_session(self, session_id: str) -> JSON:
        return await self._call("GET", _core.session_path(session_id))

    async def list_sessions(
        self, namespace: Optional[str] = None, user: Optional[str] = None, provider: Optional[str] = None
    ) -> List[JSON]:
        return await self._call("GET", "/v1/sessions", params=_core.list_params(namespace, user, provider))

    async def execute_session(self, session_id: str, command: str, timeout: Optional[float] = None) -> JSON:
        return await self._call(
            "POST",
            _core.session_path(session_id, "execute"),
            json_body=_core.execute_body(command, timeout),
            timeout=_core.execute_timeout(timeout, self.timeout),
        )

    async def delete_session(self, session_id: str) -> JSON:
        return await self._call("DELETE", _core.session_path(session_id))

    async def connect_session(self, session_id: str) -> JSON:
        return await self._call("GET", _core.session_path(session_id, "connect"))

    async def start_session(self, session_id: str) -> JSON:
        return await self._call("POST", _core.session_path(session_id, "start"), json_body={})

    async def stop_session(self, session_id: str) -> JSON:
        return await self._call("POST", _core.session_path(session_id, "stop"), json_body={})

    async def extend_session(self, session_id: str, ttl_minutes: int) -> JSON:
        return await self._call(
            "POST", _core.session_path(session_id, "extend"), json_body={"ttl_minutes": ttl_minutes}
        )

    async def create_cloudrun_workspace(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "user",
        ttl_minutes: Optional[int] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
        **extra: Any,
    ) -> JSON:
        body = _core.legacy_create_body(template, namespace, user, ttl_minutes, storage_options, extra)
        return await self._call(
            "POST", "/v1/cloudrun/workspaces", json_body=body, timeout=_create_timeout(self.timeout)
        )

    async def get_cloudrun_workspace(self, workspace_id: str) -> JSON:
        return await self._call("GET", _core.legacy_path(workspace_id))

    async def delete_cloudrun_workspace(self, workspace_id: str) -> JSON:
        return await self._call("DELETE", _core.legacy_path(workspace_id))

    async def execute_in_cloudrun_workspace(
        self, workspace_id: str, command: str, timeout: Optional[float] = None
    ) -> JSON:
        params: Dict[str, Any] = {"command": command}
        if timeout is not None:
            params["timeout"] = timeout
        return await self._call(
            "POST",
            _core.legacy_path(workspace_id, "execute"),
            params=params,
            timeout=_core.execute_timeout(timeout, self.timeout),
        )

    @asynccontextmanager
    async def session(
        self, request: Optional[Mapping[str, Any]] = None, **fields: Any
    ) -> AsyncIterator[AsyncWorkspace]:
        ws = AsyncWorkspace(self, await self.create_session(request, **fields))
        async with _deleting(ws):
            yield ws

    @asynccontextmanager
    async def cloudrun_workspace_session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "user",
        ttl_minutes: Optional[int] = 60,
        storage_options: Optional[Mapping[str, Any]] = None,
        **extra: Any,
    ) -> AsyncIterator[AsyncWorkspace]:
        info = await self.create_cloudrun_workspace(template, namespace, user, ttl_minutes, storage_options, **extra)
        ws = AsyncWorkspace(self, info, legacy=True)
        async with _deleting(ws):
            yield ws

    @asynccontextmanager
    async def gke_workspace_session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "user",
        ttl_minutes: Optional[int] = 60,
        **extra: Any,
    ) -> AsyncIterator[AsyncWorkspace]:
        request: Dict[str, Any] = {
            "provider": "auto",
            "template": template,
            "namespace": namespace,
            "user": user,
            "long_lived": True,
        }
        if ttl_minutes is not None:
            request["ttl_minutes"] = ttl_minutes
        async with self.session(request, **extra) as ws:
            yield ws

    async def _ws_connect(
        self, path: str, params: Sequence[Tuple[str, str]] = (), subprotocols: Sequence[str] = ()
    ) -> ClientConnection:
        url = _core.ws_url(self.base_url, path, params)
        extra = {"X-API-Key": self._api_key} if self._api_key else {}
        try:
            return await connect(
                url,
                additional_headers=extra,
                subprotocols=[*subprotocols] or None,  # type: ignore[list-item]
                open_timeout=self.timeout,
                max_size=_core.MAX_MESSAGE,
                user_agent_header=f"onmemos-python/{_core.__version__}",
                logger=_core.WS_LOGGER,
            )
        except InvalidStatus as e:
            raise _core.upgrade_error(e.response.status_code, bytes(e.response.body or b"")) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise RequestTimeoutError(f"the WebSocket {path} did not open in time") from None
        except OSError as e:
            raise UnavailableError(f"cannot reach the onmemos server at {self.base_url}: {e}") from None

    async def exec_stream(
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
    ) -> AsyncExecStream:
        """As OnMemOSClient.exec_stream: ``async for kind, data in stream``; stdin may also be an async iterable."""
        wants_stdin = stdin is not None and stdin is not False
        params = _core.exec_params(
            argv, stdin=wants_stdin, tty=tty, env=env, cwd=cwd, cols=cols, rows=rows, term=term, timeout=timeout
        )
        ws = await self._ws_connect(_core.session_path(session_id, "exec"), params, [_core.V5])
        return AsyncExecStream(ws, stdin)

    async def exec(
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
        out: List[bytes] = []
        err: List[bytes] = []
        stream = await self.exec_stream(session_id, argv, stdin=stdin, tty=tty, env=env, cwd=cwd, timeout=timeout)
        async with stream:
            async for kind, data in stream:
                (out if kind == "stdout" else err).append(data)
                callback = on_stdout if kind == "stdout" else on_stderr
                if callback is not None:
                    callback(data)
            return ExecResult(await stream.finish(), b"".join(out), b"".join(err), stream.message)

    async def shell(
        self,
        session_id: str,
        argv: Optional[Sequence[str]] = None,
        *,
        stdin_fd: Optional[int] = None,
        stdout_fd: Optional[int] = None,
    ) -> int:
        """As OnMemOSClient.shell, on the running event loop."""
        in_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        out_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
        if argv is None:
            argv = ((await self.connect_session(session_id)).get("shell") or {}).get("argv") or ["/bin/sh", "-l"]
        size_fd = in_fd if os.isatty(in_fd) else out_fd
        cols, rows = terminal_size(size_fd)
        stream = await self.exec_stream(session_id, argv, stdin=True, tty=True, cols=cols, rows=rows, term=default_term())
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Optional[bytes]] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(in_fd, _core.CHUNK)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(in_fd)
            queue.put_nowait(data or None)

        async def pump() -> None:
            while True:
                data = await queue.get()
                if data is None:
                    await stream.close_stdin()
                    return
                await stream.write(data)

        sigwinch = getattr(signal, "SIGWINCH", None)
        async with stream:
            with raw_mode(in_fd):
                loop.add_reader(in_fd, readable)
                if sigwinch is not None:
                    try:
                        loop.add_signal_handler(
                            sigwinch, lambda: loop.create_task(stream.resize(*terminal_size(size_fd)))
                        )
                    except (RuntimeError, ValueError):
                        sigwinch = None
                writer = loop.create_task(pump())
                try:
                    async for _kind, data in stream:
                        _write_all(out_fd, data)
                finally:
                    loop.remove_reader(in_fd)
                    if sigwinch is not None:
                        loop.remove_signal_handler(sigwinch)
                    writer.cancel()
                    try:
                        await writer
                    except (asyncio.CancelledError, ConnectionClosed):
                        pass
            return await stream.finish()

    async def json_shell(self, session_id: str, *, legacy: bool = False) -> AsyncJsonShell:
        path = _core.legacy_path(session_id, "shell") if legacy else _core.session_path(session_id, "shell")
        return AsyncJsonShell(await self._ws_connect(path))


@asynccontextmanager
async def _deleting(ws: AsyncWorkspace) -> AsyncIterator[AsyncWorkspace]:
    try:
        yield ws
    except BaseException:
        try:
            await ws.delete()
        except Exception:
            pass
        raise
    await ws.delete()


class AsyncWorkspace:
    """As :class:`onmemos.Workspace`, awaited."""

    def __init__(self, client: AsyncOnMemOSClient, info: JSON, *, legacy: bool = False) -> None:
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
        return f"AsyncWorkspace({self.id!r})"

    async def execute(self, command: str, timeout: Optional[float] = None) -> JSON:
        if self.legacy:
            return await self.client.execute_in_cloudrun_workspace(self.id, command, timeout)
        return await self.client.execute_session(self.id, command, timeout)

    async def exec(self, argv: Sequence[str], **kwargs: Any) -> ExecResult:
        return await self.client.exec(self.id, argv, **kwargs)

    async def exec_stream(self, argv: Sequence[str], **kwargs: Any) -> AsyncExecStream:
        return await self.client.exec_stream(self.id, argv, **kwargs)

    async def json_shell(self) -> AsyncJsonShell:
        return await self.client.json_shell(self.id, legacy=self.legacy)

    async def delete(self) -> None:
        if self.deleted:
            return
        self.deleted = True
        try:
            if self.legacy:
                await self.client.delete_cloudrun_workspace(self.id)
            else:
                await self.client.delete_session(self.id)
        except NotFoundError:
            pass


class AsyncExecStream:
    """As :class:`onmemos.ExecStream`: ``async for kind, data in stream``, then ``await stream.finish()``."""

    def __init__(self, ws: ClientConnection, stdin: StdinSource) -> None:
        self._ws = ws
        self._state = _core._FrameState()
        self._stdin_closed = stdin is None or stdin is False
        self._stdin_task: Optional[asyncio.Task[None]] = None
        self._stdin_error: Optional[BaseException] = None
        chunks = _core.stdin_chunks(stdin)
        if chunks is not None:
            self._stdin_task = asyncio.get_running_loop().create_task(self._pump(chunks))

    async def _pump(self, source: Any) -> None:
        try:
            if hasattr(source, "__aiter__"):
                async for data in source:
                    if data:
                        await self.write(data)
            elif hasattr(source, "read"):
                while True:
                    data = source.read(_core.CHUNK)
                    if not data:
                        break
                    await self.write(data)
            else:
                for data in source:
                    if data:
                        await self.write(data)
            await self.close_stdin()
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self._stdin_error = e
            await self.close()

    @property
    def exit_code(self) -> Optional[int]:
        return self._state.exit_code

    @property
    def message(self) -> Optional[str]:
        return self._state.message

    async def write(self, data: Union[bytes, str]) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        for i in range(0, len(payload), _core.CHUNK):
            await self._ws.send(_core.frame(_core.STDIN, payload[i : i + _core.CHUNK]))

    async def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            await self._ws.send(_core.STDIN_EOF)

    async def resize(self, cols: int, rows: int) -> None:
        try:
            await self._ws.send(_core.resize_frame(cols, rows))
        except ConnectionClosed:
            pass

    async def signal(self, name: str) -> None:
        await self._ws.send(_core.frame(_core.SIGNAL, name.encode()))

    async def __aiter__(self) -> AsyncIterator[Tuple[str, bytes]]:
        try:
            async for message in self._ws:
                chunk = self._state.take(message)
                if chunk is not None:
                    yield chunk
        except ConnectionClosed as e:
            self._state.closed_reason = str(e)

    async def finish(self) -> int:
        async for _ in self:
            pass
        if self._stdin_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stdin_task), timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        if self._stdin_error is not None:
            raise ProviderError(f"reading stdin failed: {self._stdin_error}")
        return self._state.finish()

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> AsyncExecStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        task = self._stdin_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


class AsyncJsonShell:
    """As :class:`onmemos.JsonShell`, awaited: ``async with await client.json_shell(id) as sh``."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def run(self, command: str, timeout: Optional[float] = None) -> JSON:
        message: Dict[str, Any] = {"type": "command", "command": command}
        if timeout is not None:
            message["timeout"] = timeout
        try:
            await self._ws.send(json.dumps(message))
            reply = json.loads(await self._ws.recv())
        except ConnectionClosed as e:
            raise ProviderError(f"the JSON shell closed: {e}") from None
        return _shell_reply(reply)

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> AsyncJsonShell:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
