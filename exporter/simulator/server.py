"""Serve a SimulatedApi inside the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from exporter.serving import EmbeddedServer, bind_socket, embedded_server, url_of
from exporter.simulator.app import SimulatedApi


@dataclass
class RunningServer:
    url: str
    _server: EmbeddedServer
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def start_server(api: SimulatedApi, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    sock = bind_socket(host, port)
    server = embedded_server(api.app)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="simulator")
    while not server.started:
        if task.done():
            task.result()  # surfaces the start-up error
        await asyncio.sleep(0.01)
    return RunningServer(url_of(sock), server, task)
