"""BUS: every message goes to every directly connected peer (no forwarding).

Run: python examples/bus.py
"""
import scaproust as sp

with sp.Session() as session:
    hub, b, c = (session.socket(sp.Bus, recv_timeout=2.0) for _ in range(3))
    url = hub.bind("tcp://127.0.0.1:0").url
    b.connect(url)
    c.connect(url)

    # connect() returns at once; wait (bounded) until both connections are up,
    # because BUS, like PUB, drops what it cannot deliver right now.
    while hub.stats.get("pipes_opened", 0) < 2:
        sp.poll({hub: sp.POLLOUT}, timeout=0.01)

    hub.send(b"hub says hi")
    print("b got:", b.recv().decode())
    print("c got:", c.recv().decode())

    b.send(b"b says hi")  # b is connected to the hub only, so only the hub hears it
    print("hub got:", hub.recv().decode())
