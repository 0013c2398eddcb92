"""AsyncOnMemOSClient: the same surface, awaited, against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, AsyncIterator, List, TypeVar

import pytest
from conftest import Server

from onmemos import AsyncOnMemOSClient, AuthError, ForbiddenError, NotFoundError

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 120))


class Boom(Exception):
    pass


def test_async_methods_and_context_managers(server: Server) -> None:
    async def main() -> None:
        async with AsyncOnMemOSClient(server.url, server.key) as client:
            s = await client.create_session({"namespace": "py-async", "user": "u", "ttl_minutes": 10})
            try:
                assert (await client.get_session(s["id"]))["id"] == s["id"]
                assert [x["id"] for x in await client.list_sessions(namespace="py-async")] == [s["id"]]
                r = await client.execute_session(s["id"], "echo hi; exit 4")
                assert r == {"stdout": "hi\n", "stderr": "", "returncode": 4, "success": False}
                assert (await client.connect_session(s["id"]))["json_shell"] == f"/v1/sessions/{s['id']}/shell"
                # Several at once on one client.
                results = await asyncio.gather(*(client.execute_session(s["id"], f"echo {i}") for i in range(4)))
                assert [x["stdout"] for x in results] == [f"{i}\n" for i in range(4)]
            finally:
                await client.delete_session(s["id"])
            with pytest.raises(NotFoundError):
                await client.get_session(s["id"])

            async with client.cloudrun_workspace_session("python", "py-async", "legacy", ttl_minutes=10) as ws:
                assert (await ws.execute("pwd"))["stdout"] == "/workspace\n"
                legacy = ws.id
            with pytest.raises(NotFoundError):
                await client.get_cloudrun_workspace(legacy)

            ids: List[str] = []
            with pytest.raises(Boom):
                async with client.session(namespace="py-async", user="raise") as ws:
                    ids.append(ws.id)
                    raise Boom()
            with pytest.raises(Boom):
                async with client.gke_workspace_session("python", "py-async", "gke") as ws:
                    ids.append(ws.id)
                    raise Boom()
            for i in ids:
                with pytest.raises(NotFoundError):
                    await client.get_session(i)

    run(main())


def test_async_exec_streams_and_json_shell(server: Server) -> None:
    async def main() -> None:
        async with AsyncOnMemOSClient(server.url, server.key) as client:
            async with client.session(namespace="py-async", user="exec") as ws:
                r = await ws.exec(["sh", "-c", "wc -l; echo e >&2; exit 6"], stdin=b"1\n2\n")
                assert (r.exit_code, r.stdout, r.stderr) == (6, b"2\n", b"e\n")

                async def chunks() -> AsyncIterator[bytes]:
                    for part in (b"a", b"b", b"c"):
                        yield part

                assert (await ws.exec(["cat"], stdin=chunks())).stdout == b"abc"
                stream = await ws.exec_stream(["sh", "-c", "echo first; read x; echo got-$x"], stdin=True)
                async with stream:
                    it = stream.__aiter__()
                    assert await it.__anext__() == ("stdout", b"first\n")
                    await stream.write(b"z\n")
                    await stream.close_stdin()
                    rest = [d async for _, d in it]
                    assert b"".join(rest) == b"got-z\n"
                    assert await stream.finish() == 0
                shell = await ws.json_shell()
                async with shell:
                    assert (await shell.run("echo json"))["stdout"] == "json\n"

    run(main())


def test_async_errors_are_typed(server: Server) -> None:
    async def main() -> None:
        async with AsyncOnMemOSClient(server.url, "wrong-key-0123456789abcdef") as wrong:
            with pytest.raises(AuthError):
                await wrong.list_sessions()
            with pytest.raises(AuthError):
                await wrong.exec("ws-none-x-1-abcd", ["true"])
        async with AsyncOnMemOSClient(server.url, server.scoped_key) as scoped:
            with pytest.raises(ForbiddenError):
                await scoped.create_session(namespace="elsewhere")
        async with AsyncOnMemOSClient(server.url, server.key) as client:
            with pytest.raises(NotFoundError):
                await client.exec("ws-none-x-1-abcd", ["true"])

    run(main())
