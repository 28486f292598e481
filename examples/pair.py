"""PAIR: two sockets, one connection, messages both ways.

Run: python examples/pair.py
"""
import scaproust as sp

with sp.Session() as session:  # one I/O thread; leaving the block closes every socket
    left = session.socket(sp.Pair, recv_timeout=2.0)
    right = session.socket(sp.Pair, recv_timeout=2.0)

    ep = left.bind("tcp://127.0.0.1:0")  # port 0: the system picks a free port
    right.connect(ep.url)  # ep.url holds the real port

    right.send(b"hello from right")
    print("left got:", left.recv().decode())
    left.send(b"hello from left")
    print("right got:", right.recv().decode())
