"""The benchmark's plumbing works: a few tiny workers through run.py, and the report.

No timing value is checked (the machine is shared): only that the runs happen, the JSON has
what bench/report.py needs, and the report renders a markdown table.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402  (bench/ is not a package)


def smoke(tmp_path, only: str, impls: str) -> dict:
    """Run ``run.py --smoke`` on these measures and contenders; return its JSON."""
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "--only", only,
         "--impls", impls, "--json", str(out)],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_a_smoke_run_writes_what_the_report_needs(tmp_path):
    doc = smoke(tmp_path, "rr64_tcp,pp64_tcp", "scaproust,bare")
    for key in ("command", "machine", "mode", "reps", "measures", "cases", "ratios",
                "targets", "contenders"):
        assert key in doc
    assert doc["mode"] == "procs"
    got = {(c["measure"], c["contender"]) for c in doc["cases"]}
    assert got == {(m, i) for m in ("rr64_tcp", "pp64_tcp") for i in ("scaproust", "bare")}
    for case in doc["cases"]:
        assert case["errors"] == [] and len(case["runs"]) == 1, case
        summary = case["summary"]
        assert {"median", "min", "max", "cpu_us_per_msg"} <= summary.keys()
        run = case["runs"][0]
        assert run["peer"] == "process" and "worker_cmd" in case
        if case["measure"] == "rr64_tcp":
            assert {"rtt_median_us", "rtt_p99_us"} <= run.keys()
        else:
            assert run["count"] == 200 and {"msgs_per_s", "mb_per_s"} <= run.keys()
    assert set(doc["ratios"]["rr64_tcp"]) == {"bare"}
    assert len(doc["ratios"]["pp64_tcp"]["bare"]["per_round"]) == 1
    assert any(t["key"] == "rr64_tcp" and t["peer"] == "pynng" for t in doc["targets"])
    assert "| REQ/REP round trip 64 B, tcp |" in report.render_body(doc)


def test_a_smoke_run_of_the_contexts_case_counts_every_request(tmp_path):
    doc = smoke(tmp_path, "ctx8_tcp", "scaproust,pynng")
    assert {c["contender"] for c in doc["cases"]} == {"scaproust", "pynng"}
    for case in doc["cases"]:
        assert case["errors"] == [], case
        run = case["runs"][0]
        # 200 requests over 8 contexts, every one answered with its 64-byte echo
        assert (run["count"], run["contexts"]) == (200, 8) and run["msgs_per_s"] > 0
    assert "| REQ/REP 64 B, 8 contexts a side in flight, tcp |" in report.render_body(doc)


def _synthetic() -> dict:
    def case(measure, key, label, median, **extra):
        return {"measure": measure, "contender": key, "label": label, "impl": key,
                "backend": None, "errors": [], "runs": [{"round": 0}], "worker_cmd": "x",
                "summary": {"runs": 1, "failed": 0, "median": median, "min": median,
                            "max": median, **extra}}

    return {
        "date": "2000-01-01", "time": "2000-01-01T00:00:00", "command": "bench/run.py",
        "mode": "procs", "reps": 1, "elapsed_s": 1.0, "quick": False, "target_s": 0.7,
        "machine": {"cpu": "test", "nproc": 2, "versions": {}}, "notes": ["a note"],
        "contenders": [{"key": "scaproust", "label": "scaproust"},
                       {"key": "pynng", "label": "pynng"}],
        "measures": [
            {"id": "rr64_tcp", "title": "REQ/REP round trip 64 B, tcp", "kind": "rtt",
             "transport": "tcp", "size": 64, "unit": "µs", "metric": "rtt_median_us"},
            {"id": "pp64_tcp", "title": "PUSH->PULL 64 B, tcp", "kind": "thr",
             "transport": "tcp", "size": 64, "unit": "msg/s", "metric": "msgs_per_s"},
        ],
        "cases": [case("rr64_tcp", "scaproust", "scaproust", 50.0, rtt_p99_us=90.0),
                  case("rr64_tcp", "pynng", "pynng", 100.0, rtt_p99_us=150.0),
                  case("pp64_tcp", "scaproust", "scaproust", 5e5),
                  case("pp64_tcp", "pynng", "pynng", 2e4)],
        "ratios": {"rr64_tcp": {"pynng": {"per_round": [0.5], "median": 0.5, "min": 0.5,
                                          "max": 0.5}}},
        "targets": [{"target": "REQ/REP 64 B round trip, median", "ratio": "scaproust / pynng",
                     "requirement": "<= 0.7x", "value": 0.5, "per_round": [0.5],
                     "holds": True}],
    }


def test_the_report_renders_markdown_tables():
    md = report.render_markdown(_synthetic(), "`synthetic`", "performance.png")
    assert md.startswith("# Performance")
    assert "| case | unit | scaproust | pynng | scaproust / pynng |" in md
    assert "| REQ/REP round trip 64 B, tcp | µs | 50.0 (50.0..50.0), p99 90.0 |" in md
    assert "| PUSH->PULL 64 B, tcp | msg/s | 500.0 k" in md
    assert "| REQ/REP 64 B round trip, median | scaproust / pynng | <= 0.7x | 0.50x | yes |" in md
    assert "![round trips and throughput" in md and "- a note" in md


def test_a_narrowed_run_never_overwrites_the_days_full_results(monkeypatch, tmp_path):
    import run  # noqa: PLC0415  (bench/ is not a package: on the path above)

    monkeypatch.setattr(run.time, "strftime", lambda fmt: "2026-01-02")
    names = {argv: Path(run.default_results_path(run.parse_args(list(argv)))).name
             for argv in [(), ("--quick",), ("--only", "rr64_tcp"), ("--impls", "bare"),
                          ("--quick", "--only", "rr64_tcp")]}
    assert names == {(): "2026-01-02.json", ("--quick",): "2026-01-02-quick.json",
                     ("--only", "rr64_tcp"): "2026-01-02-partial.json",
                     ("--impls", "bare"): "2026-01-02-partial.json",
                     ("--quick", "--only", "rr64_tcp"): "2026-01-02-quick.json"}
    # The report renders the newest full run, whatever partial or quick one came after.
    monkeypatch.setattr(report, "HERE", str(tmp_path))
    (tmp_path / "results").mkdir()
    for name in ("2026-01-01.json", "2026-01-02-partial.json", "2026-01-02-quick.json"):
        (tmp_path / "results" / name).write_text("{}")
    assert Path(report.newest_full_results()).name == "2026-01-01.json"


def test_each_worker_process_is_pinned_to_one_core(monkeypatch):
    # Two processes: each on its own core. One process with both sides (inproc): on one
    # core, unless the run spreads it.
    import _workers  # noqa: PLC0415  (bench/ is not a package: on the path above)

    pinned: list[set[int]] = []
    monkeypatch.setattr(_workers.os, "sched_setaffinity", lambda pid, cpus: pinned.append(cpus))
    monkeypatch.setenv(_workers.CPUS_ENV, "2,5")
    tcp = {"mode": "procs", "transport": "tcp"}
    assert (_workers.pin(tcp, 0), _workers.pin(tcp, 1)) == (2, 5)
    inproc = {"mode": "procs", "transport": "inproc"}
    assert _workers.pin(inproc, 0) == 2
    assert _workers.pin({**inproc, "spread": True}, 0) is None
    assert _workers.pin({"mode": "threads", "transport": "tcp"}, 0) == 2
    assert pinned == [{2}, {5}, {2}, {2}]


def test_one_side_runs_each_role_against_its_bare_peer():
    # Each round trip completes (a REQ whose reply did not carry its id, or a REP that
    # could not route its reply, would time out in recv() or in the peer's read), and
    # every send and receive is timed.
    import one_side

    for role in sorted(one_side.ROLES):
        sends, recvs = one_side.run(role, 5)
        assert len(sends) == len(recvs) == 5, role
        assert all(t > 0 for t in sends + recvs), role


def test_one_side_times_the_critical_path_from_its_marks():
    # The marks are set by the pipe's writes and the reader's polls, and the critical part
    # of a call is shorter than the call. A round trip whose receive did not poll (a REP's
    # first few, read by the I/O thread before its loan is kept) is left out, not timed
    # from a stale mark.
    import one_side

    # Under load the I/O thread may read every reply first, the peer's bytes being in the
    # kernel before recv() is called, and then no receive waits: a run with too few round
    # trips timed is run again, up to three times.
    for role in sorted(one_side.ROLES):
        sends, recvs = one_side.run(role, 60)
        for _ in range(3):
            c_sends, c_recvs = one_side.run(role, 60, critical=True)
            if len(c_sends) >= 20:
                break
        assert 20 <= len(c_sends) == len(c_recvs) <= 60, role
        assert all(0 < t < 1e4 for t in c_sends + c_recvs), role
        assert statistics.median(c_sends) < statistics.median(sends), role


def test_probe_wake_measures_each_way_of_waiting_and_each_hand_off():
    # Every way of waiting completes its ping-pong between two processes, and the in-process
    # round trips complete with and without SCHED_BATCH (a policy any user may set on its
    # own threads), and in one thread; the caller's affinity and policy are as they were
    # afterwards. The cold probe's receives complete after each kind of pause.
    import os

    import probe_wake

    affinity, policy = os.sched_getaffinity(0), os.sched_getscheduler(0)
    cores = (min(affinity), max(affinity))
    for way in probe_wake.WAYS:
        assert probe_wake._ping_pong(way, 20, cores) > 0, way
    assert os.sched_getaffinity(0) == affinity
    for kind in ("reqrep", "pair"):
        for batch in (False, True):
            rtt, voluntary, involuntary = probe_wake._round_trips(kind, batch, 20)
            assert rtt > 0 and voluntary >= 0 and involuntary >= 0, (kind, batch)
        assert probe_wake._one_thread(kind, 20) > 0, kind
    assert os.sched_getscheduler(0) == policy
    for kind in ("warm", "sleep", "spin"):
        ours, send, bare = probe_wake._received(kind, 10, 20)
        assert ours > 0 and send > 0 and bare > 0, kind
    # The library-free floor: both boxes carry every message there and back, and count
    # the switches (run in a thread of its own: a lost message would hang the bounce).
    import threading

    for box in (probe_wake._LockBox, probe_wake._FdBox):
        results: list = []
        bounce = threading.Thread(
            target=lambda box=box, results=results: results.append(probe_wake._bounce(box, 20)),
            daemon=True)
        bounce.start()
        bounce.join(10)
        assert results, f"{box.__name__} lost a message"
        rtt, switches = results[0]
        assert rtt > 0 and switches >= 0, box


def test_probe_layers_runs_each_mode_both_ways():
    # The fused exchanges complete and return what was sent (Fused asserts each frame is
    # whole, the credit there and the loan kept), between two processes and one side
    # against a bare peer; the caller's affinity is as it was afterwards.
    import os

    import probe_layers

    affinity = os.sched_getaffinity(0)
    cores = (min(affinity), max(affinity))
    for mode in probe_layers.MODES:
        assert probe_layers.round_trips(mode, 20, cores) > 0, mode
    assert os.sched_getaffinity(0) == affinity
    for mode in ("api", "machines", "bare"):
        recv, send = probe_layers.one_side(mode, 20)
        assert recv > 0 and send > 0, mode


def test_probe_inproc_moves_every_message_each_way():
    # Each way carries every message (the run checks the bytes received), more of them than
    # the locked queue's credit, so that its sender waits for room and is woken; run in a
    # thread of its own: a lost wake-up would hang the run.
    import threading

    import probe_inproc

    count = probe_inproc.CREDIT * 3
    for way in probe_inproc.WAYS:
        results: list = []
        run = threading.Thread(
            target=lambda way=way, results=results: results.append(
                probe_inproc.RUNS[way](count)),
            daemon=True)
        run.start()
        run.join(20)
        assert results, f"{way} did not finish"
        res = results[0]
        assert res["rate"] > 0 and res["send"] > 0 and res["recv"] > 0, way


def test_probe_spin_paces_round_trips_each_way_with_and_without_the_spin():
    # Both placements complete their round trips (the client checks every reply), paced
    # and flat out, spinning and not; the caller's affinity is as it was afterwards.
    import os

    import probe_spin

    affinity = os.sched_getaffinity(0)
    cores = (min(affinity), max(affinity))
    for spin in (probe_spin.DEFAULT_SPIN, 0.0):
        for rate in (2000.0, 0.0):
            rtt, reached, cpu = probe_spin.between_processes(spin, rate, 30, cores)
            assert rtt > 0 and cpu > 0 and reached > 0, (spin, rate)
            if rate:
                assert reached <= rate * 1.05, (spin, rate)  # paced: never faster
            rtt, reached, cpu = probe_spin.in_threads(spin, rate, 30, cores[0])
            assert rtt > 0 and cpu > 0 and reached > 0, (spin, rate)
    assert os.sched_getaffinity(0) == affinity


def test_probe_steps_times_every_step_both_ways():
    # Every round trip completes with the bytes sent (the probe checks each reply), in one
    # thread and in two; each step is timed, a send's delivery is part of it, and the
    # one-thread steps add up to the round trip. The wrapped loop method and the caller's
    # affinity are as they were afterwards.
    import os

    import probe_steps

    from scaproust.reactor.loop import Loop

    original, affinity = Loop.run_end_of_batch, os.sched_getaffinity(0)
    for kind in probe_steps.KINDS:
        alone = probe_steps.one_thread(kind, 50)
        assert set(alone) == set(probe_steps.ONE_THREAD), kind
        assert all(alone[step] > 0 for step in probe_steps.ONE_THREAD), (kind, alone)
        assert alone["delivery"] < alone["client send"], (kind, alone)
        steps = ("client send", "server recv", "server send", "client recv")
        assert sum(alone[step] for step in steps) > alone["round trip"] / 2, (kind, alone)
        apart = probe_steps.two_threads(kind, 50)
        assert set(apart) == set(probe_steps.TWO_THREADS), kind
        assert all(apart[step] > 0 for step in probe_steps.TWO_THREADS[:-1]), (kind, apart)
        assert 0 <= apart["slept %"] <= 100, (kind, apart)
    assert Loop.run_end_of_batch is original
    assert os.sched_getaffinity(0) == affinity
