"""PUSH/PULL: a pipeline; PUSH hands each message to one of its connected workers.

Run: python examples/pipeline.py
"""
import scaproust as sp

with sp.Session() as session:
    push = session.socket(sp.Push, send_timeout=2.0)
    url = push.bind("tcp://127.0.0.1:0").url
    workers = [session.socket(sp.Pull) for _ in range(2)]
    for worker in workers:
        worker.connect(url)
    while push.stats.get("pipes_opened", 0) < 2:  # both workers connected (bounded wait)
        sp.poll({push: sp.POLLOUT}, timeout=0.01)

    for n in range(4):
        push.send(b"task %d" % n)  # each task goes to one worker only, in turn

    received = 0
    while received < 4:
        # sp.poll waits until one of the sockets has a message (or 2 s pass)
        ready = sp.poll({worker: sp.POLLIN for worker in workers}, timeout=2.0)
        if not ready:
            raise SystemExit("no task arrived within 2 seconds")
        for worker in ready:
            print(f"worker {workers.index(worker)} got {worker.recv().decode()}")
            received += 1
