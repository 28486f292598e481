"""A device: two raw sockets joined, here a REQ/REP broker between clients and a server.

Clients connect to the front, servers to the back; the device carries requests one way
and replies the other, routing each reply by the header it kept.

Run: python examples/device.py
"""
import threading

import scaproust as sp

with sp.Session() as session:
    front = session.socket(sp.Rep, raw=True)  # faces the clients
    back = session.socket(sp.Req, raw=True)  # faces the servers
    front_url = front.bind("tcp://127.0.0.1:0").url
    back_url = back.bind("tcp://127.0.0.1:0").url
    device = sp.device(front, back, background=True)  # runs in its own thread

    server = session.socket(sp.Rep, recv_timeout=2.0)
    server.connect(back_url)

    def serve() -> None:
        for _ in range(2):
            server.send(server.recv().upper())

    thread = threading.Thread(target=serve)
    thread.start()
    for name in (b"alice", b"bob"):
        client = session.socket(sp.Req, recv_timeout=2.0)
        client.connect(front_url)
        client.send(b"hello from " + name)
        print("client got:", client.recv().decode())
    thread.join()
    device.stop()
