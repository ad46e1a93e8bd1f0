"""A real model end to end: the Procfile's ``llm`` process (llama.cpp's
OpenAI-compatible server with the default local model, SmolLM2 135M Instruct)
and the app under gunicorn with ``LLM=local``. The asker reads an answer to a
plain question token by token over the SSE response to its real POST; an
observer's page socket ends with the same complete reply.

Needs the ``local`` extra (``bash scripts/install-local.sh``; ``scripts/test.sh``
installs it). Without it the test is skipped, except under CI, where it fails.
"""
import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from chat.llm import local_model
from chat.llm.local_model import MODELS
from chat.llm.local_model import chosen
from chat.render.rendering import render_markdown
from conftest import ROOT
from conftest import LiveServer
from conftest import free_port
from support.body import Body
from support.live import Browser
from support.live import Socket
from support.live import SSEReader
from support.live import author_body
from support.live import parse_append
from support.live import parse_upsert
from support.live import procfile_line
from support.live import wait_settled

EXTRA = ("llama_cpp", "uvicorn") + tuple(model.package for model in MODELS.values())
QUESTION = "Write three short sentences about the sea."
MAX_TOKENS = 200


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


def token_count(port, text):
    """How many tokens the llm process's tokenizer makes of ``text``."""
    request = urllib.request.Request(
        "http://127.0.0.1:{}/extras/tokenize/count".format(port),
        data=json.dumps({"input": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["count"]


def test_a_real_model_streams_to_the_asker_and_completes_for_observers(tmp_path, llm_port):
    # Keep-alives every 2 s: a slow first token never looks like a dead stream
    # to the test's 10 s socket timeout.
    env = {"LLM": "local", "LLM_PORT": str(llm_port), "MAX_TOKENS": str(MAX_TOKENS), "SSE_KEEPALIVE": "2"}
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
        with alice.stream("@gpt " + QUESTION) as response:
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
        # (A held-back reply would arrive within a millisecond or two; a model
        # this small makes a token in about 12 ms.)
        assert tokens[-1][0] - tokens[0][0] > 0.03, ("the tokens arrived in one burst", tokens)

        row = wait_settled(server.database_url, reply_id, 10)
        assert (row["status"], row["model"], row["error"]) == ("complete", chosen().alias, None)
        answer = row["body"]
        # An answer: some text, ended by the model itself before the cap (the
        # server sends no usage when streaming: its tokenizer counts), and not
        # the question (or the chat) said back.
        assert answer.strip() and not answer[0].isspace()
        count = token_count(llm_port, answer)
        assert count < MAX_TOKENS - 5, (count, answer)
        assert QUESTION.lower() not in answer.lower() and "@gpt" not in answer, answer
        assert "I will ask the model something" not in answer, answer
        rate = count / max(row["generation_ms"], 1) * 1000  # after the first token
        print("\nlocal model {}: first token {} ms, {:.0f} tokens/s, {} tokens: {!r}".format(
            row["model"], row["ttft_ms"], rate, count, answer))
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


# Registers and encodings that only AVX-512 (and AMX) have: zmm, the upper 16
# xmm/ymm, mask registers, embedded broadcasts, and AMX's tile instructions.
BEYOND_V3 = re.compile(r"%zmm|%[xy]mm(?:1[6-9]|2\d|3[01])\b|%k[0-7]\b|\{1to\d+\}|\bldtilecfg\b|\btdpb|\btileloadd")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x86-64 build's instruction set")
def test_the_llama_cpp_build_runs_on_any_x86_64_v3_machine():
    """scripts/install-local.sh builds llama.cpp for x86-64-v3 (AVX2), never
    for the CPU it happens to run on: a build with AVX-512 or AMX crashes
    on a machine without them."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the llama.cpp build: run bash scripts/install-local.sh")
        pytest.skip("the local extra is not installed")
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    folder = os.path.join(spec.submodule_search_locations[0], "lib")
    libraries = sorted(glob.glob(os.path.join(folder, "libggml-cpu*.so*")) + glob.glob(os.path.join(folder, "libllama.so*")))
    assert libraries, "no llama.cpp libraries in " + folder
    seen_avx2 = False
    for path in libraries:
        if os.path.islink(path):
            continue
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True, check=True
        ).stdout
        beyond = [line.strip() for line in listing.splitlines() if BEYOND_V3.search(line)]
        assert not beyond, "{} uses instructions beyond x86-64-v3: {}".format(path, beyond[:5])
        seen_avx2 = seen_avx2 or "%ymm" in listing
    assert seen_avx2, "the CPU kernels use AVX2 (a build with no SIMD at all would be slow)"


def test_a_crash_in_the_smoke_test_is_named(monkeypatch):
    """The error install-local.sh prints (and why it caches nothing) when the
    build crashes on this CPU."""
    monkeypatch.setattr(local_model, "SMOKE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    monkeypatch.setattr(local_model.LocalModel, "gguf_path", lambda self: "/nowhere.gguf")
    error = local_model.smoke(MODELS["smollm2"])
    assert error.startswith("llama.cpp crashed with SIGILL") and "does not run on this CPU" in error
    monkeypatch.setattr(local_model, "SMOKE", "raise SystemExit('no such file')")
    assert local_model.smoke(MODELS["smollm2"]).startswith("llama.cpp failed (exit 1):\nno such file")
