"""Two processes talking over IPC: this script starts a copy of itself as the worker.

The parent binds a PUSH and a PULL on IPC paths in a temporary directory, starts
``python cross_process.py worker DIR``, sends it numbers and prints their squares.

Run: python examples/cross_process.py
"""
import subprocess
import sys
import tempfile

import scaproust as sp


def worker(directory: str) -> None:
    with sp.Session() as session:
        tasks = session.socket(sp.Pull, recv_timeout=5.0)
        tasks.connect(f"ipc://{directory}/tasks.ipc")
        results = session.socket(sp.Push, send_timeout=5.0)
        results.connect(f"ipc://{directory}/results.ipc")
        while (task := tasks.recv()) != b"stop":
            results.send(b"%d" % (int(task) ** 2))


def main() -> None:
    with tempfile.TemporaryDirectory() as directory, sp.Session() as session:
        tasks = session.socket(sp.Push, send_timeout=5.0)
        tasks.bind(f"ipc://{directory}/tasks.ipc")
        results = session.socket(sp.Pull, recv_timeout=5.0)
        results.bind(f"ipc://{directory}/results.ipc")
        child = subprocess.Popen([sys.executable, __file__, "worker", directory])
        try:
            for n in range(1, 4):
                tasks.send(b"%d" % n)  # waits until the worker has connected
                print(f"{n} squared is {results.recv().decode()} (from pid {child.pid})")
            tasks.send(b"stop")
            print("worker exited with", child.wait(timeout=5))
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2])
    else:
        main()
