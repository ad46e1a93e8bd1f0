"""CPU per streamed chunk in OpenAIProvider.stream, against tests/support/fake_openai.py.

The fake server runs in this process's threads; only the reading thread's CPU
(time.thread_time) is counted, so the figure is the provider's own cost:
request, SSE parsing and token extraction.

    .venv/bin/python bench/stream_cpu.py [--chunks 5000] [--runs 5]
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from chat.llm.openai_compat import OpenAIProvider  # noqa: E402
from support.fake_openai import FakeOpenAI  # noqa: E402


def one_run(provider, fake, chunks):
    fake.enqueue(["tok{} ".format(i) for i in range(chunks)], delay=0)
    start = time.thread_time()
    stream = provider.stream([{"role": "user", "content": "hi"}])
    n = sum(1 for _ in stream)
    spent = time.thread_time() - start
    assert n == chunks and stream.usage["completion_tokens"] == chunks, (n, stream.usage)
    return spent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with FakeOpenAI(token_delay=0) as fake:
        provider = OpenAIProvider(api_key="bench", model="fake", base_url=fake.base_url)
        one_run(provider, fake, 200)  # warm up imports and the connection pool
        times = [one_run(provider, fake, args.chunks) for _ in range(args.runs)]
    best, median = min(times), statistics.median(times)
    print("{} chunks x {} runs: best {:.1f} us/chunk, median {:.1f} us/chunk".format(
        args.chunks, args.runs, best / args.chunks * 1e6, median / args.chunks * 1e6))


if __name__ == "__main__":
    main()
