"""Metrics: values read back through Prometheus' own parser, one process and several (multiprocess mode)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.metrics import BUCKETS, MULTIPROC_ENV, Metrics, prepare_multiprocess_dir
from tests.server.conftest import samples

ROOT = Path(__file__).resolve().parents[2]


def value(body: bytes, name: str, **labels: str) -> float | None:
    """The one sample called `name` with exactly these labels, or None if there is none."""
    found = [s.value for s in samples(body.decode(), name) if s.labels == labels]
    assert len(found) <= 1, f"{len(found)} samples {name}{labels}"
    return found[0] if found else None


def sample_labels(body: bytes, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called `name`."""
    return [s.labels for s in samples(body.decode(), name)]


def test_requests_and_latency_are_counted():
    m = Metrics({"/reply"})
    m.observe_request("POST", "/reply", 200, 0.003)
    m.observe_request("POST", "/reply", 200, 0.3)
    m.observe_request("POST", "/reply", 422, 0.02)
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    assert value(body, "riposte_requests_total", method="POST", endpoint="/reply", status="200") == 2
    assert value(body, "riposte_requests_total", method="POST", endpoint="/reply", status="422") == 1
    buckets = {float(s["le"]) for s in sample_labels(body, "riposte_request_duration_seconds_bucket")}
    assert buckets == {*BUCKETS, math.inf}
    bucket = {le: value(body, "riposte_request_duration_seconds_bucket", endpoint="/reply", le=le)
              for le in ("0.005", "0.025", "0.25", "0.5", "+Inf")}
    assert bucket == {"0.005": 1, "0.025": 2, "0.25": 2, "0.5": 3, "+Inf": 3}  # cumulative
    assert value(body, "riposte_request_duration_seconds_count", endpoint="/reply") == 3
    assert value(body, "riposte_request_duration_seconds_sum", endpoint="/reply") == pytest.approx(0.323)


def test_turns_shedding_cancelling_and_the_queue():
    m = Metrics()
    m.observe_reply(scored=10, timed_out=False)
    m.observe_reply(scored=0, timed_out=True)
    m.observe_shed("queue_full")
    m.observe_shed("queue_full")
    m.observe_shed("draining")
    m.observe_cancelled()
    m.set_queue(jobs=3, candidates=96)
    body, _ = m.render()
    assert value(body, "riposte_replies_total") == 2
    assert value(body, "riposte_replies_timed_out_total") == 1
    assert value(body, "riposte_candidates_scored_total") == 10
    assert value(body, "riposte_requests_shed_total", reason="queue_full") == 2
    assert value(body, "riposte_requests_shed_total", reason="draining") == 1
    assert value(body, "riposte_requests_cancelled_total") == 1
    assert value(body, "riposte_scoring_queue_jobs") == 3
    assert value(body, "riposte_scoring_queue_candidates") == 96
    m.set_queue(jobs=0, candidates=0)
    body, _ = m.render()
    assert value(body, "riposte_scoring_queue_jobs") == 0
    assert value(body, "riposte_scoring_queue_candidates") == 0


def test_in_flight_goes_up_and_back_down_however_the_request_ends():
    m = Metrics()

    def in_flight() -> float | None:
        return value(m.render()[0], "riposte_requests_in_flight")

    assert in_flight() == 0
    with m.in_flight():
        with m.in_flight():
            assert in_flight() == 2
        assert in_flight() == 1
    assert in_flight() == 0
    with pytest.raises(ConnectionResetError), m.in_flight():
        raise ConnectionResetError("the client left mid-request")
    assert in_flight() == 0


def test_unknown_paths_and_methods_collapse_to_other():
    m = Metrics({"/reply"})
    m.observe_request("GET", "/wp-admin", 404, 0.001)
    m.observe_request("GET", "/.env", 404, 0.001)
    m.observe_request("BREW", "/reply", 405, 0.001)
    body, _ = m.render()
    assert value(body, "riposte_requests_total", method="GET", endpoint="other", status="404") == 2
    assert value(body, "riposte_requests_total", method="other", endpoint="/reply", status="405") == 1
    assert {s["endpoint"] for s in sample_labels(body, "riposte_requests_total")} == {"other", "/reply"}
    assert value(body, "riposte_request_duration_seconds_count", endpoint="other") == 2
    # No endpoint set: every path is its own label (the default before the app knows its routes).
    m = Metrics()
    m.observe_request("GET", "/anything", 200, 0.001)
    assert value(m.render()[0], "riposte_requests_total", method="GET", endpoint="/anything", status="200") == 1


def test_two_instances_share_nothing():
    a, b = Metrics(), Metrics()
    a.observe_request("POST", "/reply", 200, 0.01)
    a.observe_reply(scored=4, timed_out=False)
    body_b, _ = b.render()
    assert sample_labels(body_b, "riposte_requests_total") == []
    assert value(body_b, "riposte_replies_total") == 0
    assert value(a.render()[0], "riposte_replies_total") == 1


def test_process_metrics_in_single_process_mode():
    body, _ = Metrics().render()
    assert value(body, "process_cpu_seconds_total") > 0
    assert value(body, "process_resident_memory_bytes") > 0
    assert sample_labels(body, "python_info")
    assert value(body, "riposte_start_time_seconds") > 0


def test_setting_the_directory_after_prometheus_client_is_imported_is_refused(monkeypatch, tmp_path):
    # This process imported prometheus_client without the variable, so its values live in memory, not the files.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="before the process starts"):
        Metrics()


def test_prepare_multiprocess_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)  # recorded as absent, so monkeypatch removes what prepare sets
    assert prepare_multiprocess_dir(1) is None
    assert MULTIPROC_ENV not in os.environ
    path = prepare_multiprocess_dir(2)
    try:
        assert path is not None and path.is_dir() and not any(path.iterdir())
        assert os.environ[MULTIPROC_ENV] == str(path)
    finally:
        shutil.rmtree(path)
    # The operator's own directory is left alone, and not returned for removal.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert prepare_multiprocess_dir(4) is None
    assert os.environ[MULTIPROC_ENV] == str(tmp_path)


# ---------------------------------------------------------------------------------------------------- workers
# Each worker is a fresh interpreter with the variable set before it imports prometheus_client, as under uvicorn.

RECORD = """
import sys
from server.metrics import Metrics
m = Metrics({"/reply"})
for _ in range(int(sys.argv[1])):
    m.observe_request("POST", "/reply", 200, 0.02)
m.observe_reply(scored=int(sys.argv[2]), timed_out=False)
m.close()
"""

HOLD = """
import os, sys
from server.metrics import Metrics
m = Metrics({"/reply"})
m.observe_request("POST", "/reply", 200, 0.02)
m.set_queue(jobs=1, candidates=8)
with m.in_flight():
    print("ready", flush=True)
    if sys.stdin.readline().strip() == "crash":
        os._exit(1)  # dies holding its request and its queue: no close()
m.close()
print("closed", flush=True)
sys.stdin.readline()  # alive until told, as a worker finishing its shutdown: only close() can clear its gauges
"""

RENDER = """
import sys
from server.metrics import Metrics
sys.stdout.buffer.write(Metrics().render()[0])
"""


@pytest.fixture
def worker_env(tmp_path) -> dict[str, str]:
    return {**os.environ, MULTIPROC_ENV: str(tmp_path)}


def run_worker(env: dict[str, str], script: str, *args: str) -> bytes:
    """Run `script` in a fresh interpreter and return its stdout."""
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_multiprocess_render_sums_every_worker(worker_env):
    run_worker(worker_env, RECORD, "2", "5")
    run_worker(worker_env, RECORD, "3", "7")
    body = run_worker(worker_env, RENDER)  # a third worker answers the scrape
    assert value(body, "riposte_requests_total", method="POST", endpoint="/reply", status="200") == 5
    assert value(body, "riposte_request_duration_seconds_count", endpoint="/reply") == 5
    assert value(body, "riposte_request_duration_seconds_bucket", endpoint="/reply", le="0.025") == 5
    assert value(body, "riposte_request_duration_seconds_bucket", endpoint="/reply", le="0.01") == 0
    assert value(body, "riposte_replies_total") == 2
    assert value(body, "riposte_candidates_scored_total") == 12
    # Process metrics would describe only the worker that answered, so there are none.
    assert value(body, "process_cpu_seconds_total") is None


def test_multiprocess_live_gauges_leave_with_their_worker(worker_env):
    holders = [
        subprocess.Popen([sys.executable, "-c", HOLD], cwd=ROOT, env=worker_env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for p in holders:
            assert p.stdout.readline().strip() == "ready"
        body = run_worker(worker_env, RENDER)
        assert value(body, "riposte_requests_in_flight") == 2
        assert value(body, "riposte_scoring_queue_jobs") == 2
        assert value(body, "riposte_scoring_queue_candidates") == 16
        pids = {s["pid"] for s in sample_labels(body, "riposte_start_time_seconds")}
        assert {str(p.pid) for p in holders} <= pids

        closed, crashed = holders
        closed.stdin.write("close\n")
        closed.stdin.flush()
        assert closed.stdout.readline().strip() == "closed"
        body = run_worker(worker_env, RENDER)
        assert value(body, "riposte_scoring_queue_jobs") == 1  # close() took its queue out of the sum
        assert value(body, "riposte_requests_in_flight") == 1
        closed.communicate("exit\n", timeout=60)
        assert closed.returncode == 0

        crashed.communicate("crash\n", timeout=60)
        assert crashed.returncode == 1
        body = run_worker(worker_env, RENDER)
        assert value(body, "riposte_requests_in_flight") == 0  # the scrape noticed the dead worker
        assert value(body, "riposte_scoring_queue_jobs") == 0
        assert not {str(p.pid) for p in holders} & {s["pid"] for s in sample_labels(body, "riposte_start_time_seconds")}
        # Counters outlive their workers: requests served stay served.
        assert value(body, "riposte_requests_total", method="POST", endpoint="/reply", status="200") == 2
    finally:
        for p in holders:
            p.kill()
            p.wait(10)
