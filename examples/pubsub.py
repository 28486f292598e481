"""PUB/SUB: a publisher broadcasts; each subscriber keeps the topics it asked for.

Run: python examples/pubsub.py
"""
import scaproust as sp

with sp.Session() as session:
    pub = session.socket(sp.Pub)
    url = pub.bind("tcp://127.0.0.1:0").url

    weather = session.socket(sp.Sub, recv_timeout=2.0)
    weather.subscribe(b"weather.")  # a topic is a prefix of the message body
    weather.connect(url)
    everything = session.socket(sp.Sub, recv_timeout=2.0)
    everything.subscribe(b"")  # the empty topic matches every message
    everything.connect(url)

    # PUB never waits for subscribers: wait (bounded) until both are connected.
    while pub.stats.get("pipes_opened", 0) < 2:
        sp.poll({pub: sp.POLLOUT}, timeout=0.01)

    for body in (b"news.today quiet", b"weather.paris sunny"):
        pub.send(body)

    print("weather got:", weather.recv().decode())
    print("everything got:", everything.recv().decode())
    print("everything got:", everything.recv().decode())
