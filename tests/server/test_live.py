"""A real uvicorn process on loopback (`python -m server serve`), driven by httpx and the official openai client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.server.conftest import free_port, metric

ROOT = Path(__file__).resolve().parents[2]



def wait_healthy(proc: subprocess.Popen, base: str, timeout: float = 30) -> None:
    """Poll /health until 200; fail with the server's output if it exits, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server did not become healthy in {timeout:.0f} s"
        time.sleep(0.05)

def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def live_server(tiny_model_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RIPOSTE_MODEL_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--model", str(tiny_model_dir), "--no-build",
         "--port", str(port), "--log-level", "warning", "--budget-ms", "500"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        yield base
    finally:
        stop(proc)


@pytest.mark.slow
@pytest.mark.realtime
def test_live_reply_limits_and_metrics(live_server):
    with httpx.Client(base_url=live_server, timeout=10) as c:
        r = c.post("/reply", json={"history": ["do you like dogs?"], "seed": 1})
        assert r.status_code == 200 and r.json()["reply"]
        assert r.json()["stats"]["budget_ms"] == 500  # --budget-ms reached the worker through the environment
        assert r.json()["stats"]["elapsed_ms"] <= 550
        assert c.post("/reply", json={"history": []}).status_code == 422
        big = b'{"history": ["' + b"x" * (1 << 20) + b'"]}'
        assert c.post("/reply", content=big, headers={"content-type": "application/json"}).status_code == 413
        assert metric(c.get("/metrics").text, "riposte_requests_total", endpoint="/reply", status="413") >= 1


@pytest.mark.slow
def test_live_openai_client(live_server):
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=10)
    assert [m.id for m in client.models.list()] == ["default", "pirate"]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "do you like pizza?"}]
    first = client.chat.completions.create(model="default", messages=messages, n=2, seed=5, top_p=0.9, user="u1")
    texts = [c.message.content for c in first.choices]
    assert len(texts) == 2 and all(texts) and texts[0] != texts[1]
    assert first.choices[0].message.role == "assistant"
    again = client.chat.completions.create(model="default", messages=messages, n=2, seed=5)
    assert [c.message.content for c in again.choices] == texts
    stream = client.chat.completions.create(model="default", messages=messages, seed=5, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == texts[0]
    with pytest.raises(openai.NotFoundError, match="model"):
        client.chat.completions.create(model="gpt-4o", messages=messages)


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.slow
def test_live_binds_loopback_only_by_default(live_server):
    from server.__main__ import build_parser, settings_from

    assert settings_from(build_parser().parse_args(["serve"])).host == "127.0.0.1"
    port = int(live_server.rsplit(":", 1)[1])
    address = outward_address()
    if address is None:
        pytest.skip("no non-loopback interface to try")
    with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
        pass


@pytest.mark.slow
@pytest.mark.realtime
def test_sigterm_drains_in_flight_requests_then_exits_0(tiny_model_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--model", str(tiny_model_dir), "--no-build", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        # A slow request: 8 turns of up to 300 ms, each generating as many candidates as it can in its share.
        from concurrent.futures import ThreadPoolExecutor

        slow = {"personas": ["default", "pirate"], "turns": 8, "budget_ms": 300, "n_candidates": 65_536, "seed": 1}
        with ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            future = pool.submit(httpx.post, f"{base}/simulate", json=slow, timeout=30)
            time.sleep(0.4)
            proc.send_signal(signal.SIGTERM)
            r = future.result()
            took = time.monotonic() - start
        assert r.status_code == 200 and len(r.json()["turns"]) == 8, r.text
        assert took > 0.45  # the request really was in flight when the signal came
        assert proc.wait(15) == 0
        out = proc.stdout.read().decode()
        assert "stopped by SIGTERM" in out and "Traceback" not in out
        with pytest.raises(httpx.TransportError):  # and it is gone
            httpx.get(f"{base}/health", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
def test_two_workers_report_one_set_of_metrics(tiny_model_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--model", str(tiny_model_dir), "--no-build", "--port", str(port),
         "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, timeout=60)
        deadline = time.monotonic() + 30
        while True:  # both workers must be up (each reports its start time under its pid)
            text = httpx.get(f"{base}/metrics").text
            pids = {line.split('pid="')[1].split('"')[0] for line in text.splitlines()
                    if line.startswith("riposte_start_time_seconds{")}
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(pids) == 2, text
        # Fresh connections, so the kernel spreads them over both workers; every scrape counts them all.
        for _ in range(40):
            assert httpx.get(f"{base}/v1/models").status_code == 200
        for _ in range(3):
            text = httpx.get(f"{base}/metrics").text
            assert metric(text, "riposte_requests_total", endpoint="/v1/models", status="200") == 40
    finally:
        stop(proc)
