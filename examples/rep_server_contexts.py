"""A threaded REP server: one socket, a pool of worker threads, each with its own context.

Each worker receives a request on its context, works on it (here: a short sleep standing
for real work, then upper-casing), and replies on the same context; the replies reach the
clients that asked, whatever order the workers finish in. Run it as is: it starts the
server, then 4 client threads each with its own REQ context on one REQ socket, checks every
answer and prints a summary.

    python examples/rep_server_contexts.py [url] [workers] [requests]
"""

from __future__ import annotations

import sys
import threading
import time

import scaproust as sp


def worker(rep: sp.Socket) -> None:
    with rep.context() as ctx:  # its own request and reply, alongside the other workers
        while True:
            try:
                request = ctx.recv()
            except sp.Closed:
                return  # the server socket was closed
            time.sleep(0.01)  # the work: while it runs, the other workers take requests
            ctx.send(request.upper())


def main(url: str = "tcp://127.0.0.1:0", workers: int = 8, requests: int = 40) -> int:
    with sp.Session() as session:
        rep = session.socket(sp.Rep)
        bound = rep.bind(url).url
        pool = [threading.Thread(target=worker, args=(rep,)) for _ in range(workers)]
        for thread in pool:
            thread.start()

        req = session.socket(sp.Req, recv_timeout=10.0)
        req.connect(bound)
        wrong: list[tuple[bytes, bytes]] = []

        def client(k: int) -> None:
            with req.context() as ctx:
                for i in range(k, requests, 4):
                    body = b"request %d" % i
                    ctx.send(body)
                    answer = ctx.recv()
                    if answer != body.upper():
                        wrong.append((body, answer))

        started = time.monotonic()
        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        elapsed = time.monotonic() - started

        rep.close()  # the workers' recv() raise sp.Closed and they return
        for thread in pool:
            thread.join()
        print(f"{requests} requests answered by {workers} workers in {elapsed:.2f} s, "
              f"{len(wrong)} wrong")
        return 1 if wrong else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0] if args else "tcp://127.0.0.1:0",
                  int(args[1]) if len(args) > 1 else 8,
                  int(args[2]) if len(args) > 2 else 40))
