"""A threaded REP server: one REP socket per worker thread, all on one address.

Several REP sockets cannot bind one TCP port, so the server binds a raw REP (the front)
and hands requests over inproc to worker threads through a device; each worker blocks in
recv() on its own socket, and replies find their way back to the right client.

Run: python examples/threaded_rep_server.py
"""
import threading

import scaproust as sp

WORKERS = 3

with sp.Session() as session:
    front = session.socket(sp.Rep, raw=True)
    url = front.bind("tcp://127.0.0.1:0").url
    back = session.socket(sp.Req, raw=True)
    back.bind("inproc://workers")
    device = sp.device(front, back, background=True)

    def worker(number: int) -> None:
        with session.socket(sp.Rep) as rep:
            rep.connect("inproc://workers")
            while True:
                try:
                    request = rep.recv(timeout=1.0)
                except sp.Timeout:  # no more work for a second: stop
                    return
                rep.send(request + b" (worker %d)" % number)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for t in threads:
        t.start()

    replies = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with session.socket(sp.Req, recv_timeout=3.0) as req:
            req.connect(url)
            req.send(b"request %d" % number)
            reply = req.recv().decode()
            with lock:
                replies.append(reply)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    for reply in sorted(replies):
        print(reply)
    for t in threads:
        t.join()
    device.stop()
