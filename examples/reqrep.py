"""REQ/REP: a client asks, a server answers; each reply goes back to its asker.

Run: python examples/reqrep.py
"""
import scaproust as sp

with sp.Session() as session:
    server = session.socket(sp.Rep, recv_timeout=2.0)
    client = session.socket(sp.Req, recv_timeout=2.0)
    client.connect(server.bind("tcp://127.0.0.1:0").url)

    for n in (1, 2, 3):
        client.send(b"%d + %d" % (n, n))  # REQ resends on its own if no reply comes in time
        question = server.recv()
        a, _, b = question.split()
        server.send(str(int(a) + int(b)).encode())  # REP replies to whoever asked
        print(question.decode(), "=", client.recv().decode())
