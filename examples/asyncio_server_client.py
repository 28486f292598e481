"""asyncio: a REP server task and a few REQ clients, all in one event loop.

Run: python examples/asyncio_server_client.py
"""
import asyncio

import scaproust as sp


async def server(rep: sp.Socket, count: int) -> None:
    for _ in range(count):
        request = await rep.arecv()  # waits without blocking the event loop
        await rep.asend(b"echo: " + request)


async def client(url: str, name: str) -> str:
    async with sp.socket(sp.Req, recv_timeout=2.0) as req:  # closed on leaving the block
        req.connect(url)
        await req.asend(name.encode())
        return (await req.arecv()).decode()


async def main() -> None:
    async with sp.socket(sp.Rep) as rep:  # sp.socket: the default session
        url = rep.bind("tcp://127.0.0.1:0").url
        serving = asyncio.create_task(server(rep, 3))
        replies = await asyncio.gather(*(client(url, f"client {n}") for n in range(3)))
        await serving
    for reply in replies:
        print(reply)


asyncio.run(main())
