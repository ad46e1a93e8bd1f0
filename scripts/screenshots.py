"""Screenshots of the chat for the README, in docs/screenshots/.

Starts the app (gunicorn, the gevent worker, the built-in demo model) on a
temporary SQLite database, has two people chat in headless Chromium (one asks
@gpt, whose demo answer has a list and code), then photographs the first
person's page on a desktop (1280x800) and a phone (390x844), light and dark.

    .venv/bin/pip install -e ".[test]"    # Playwright; the browser is Debian's
    .venv/bin/python scripts/screenshots.py
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from support.browser import CHROMIUM  # noqa: E402  (the browser the tests drive, as they drive it)
from support.browser import CHROMIUM_ARGS  # noqa: E402

OUT = os.path.join(ROOT, "docs", "screenshots")
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
SCHEMES = ("light", "dark")
TIMEOUT_MS = 30_000

CONVERSATION = [
    ("first", "Morning! Is the new build up?"),
    ("second", "It is. Replies grow token by token for whoever asks, and a sentence at a time for everyone else."),
    ("first", "@gpt how does this chat keep bandwidth low while a reply streams?"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder):
    """gunicorn serving the app on a loopback port with the demo model."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM"))}
    env.update(
        {
            "DATABASE_URL": "sqlite:///" + os.path.join(folder, "chat.db"),
            "SECRET_KEY": "screenshots",
            "SEED_DEMO": "0",
            "DEMO_TOKEN_DELAY": "0.01",
            "DEMO_FIRST_TOKEN_DELAY": "0.1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = open(os.path.join(folder, "gunicorn.log"), "w")
    cmd = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gevent",
        "--bind", "127.0.0.1:{}".format(port),
        "--no-control-socket",
        "app:create_app()",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = "http://127.0.0.1:{}".format(port)
    # Ready once a worker answers (the master listens before the app loads).
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/static/favicon.svg", timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    with open(os.path.join(folder, "gunicorn.log")) as f:
        raise RuntimeError("the app did not start:\n" + f.read())


def stop_server(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def open_page(context, url):
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/")
    page.wait_for_function("() => document.body.dataset.live === 'true'")
    return page


def say(page, text):
    count = page.locator("#messages > article.message").count()
    field = page.locator("#composer textarea")
    field.fill(text)
    field.press("Enter")
    page.wait_for_function(
        "(n) => document.querySelectorAll('#messages > article.message').length > n", arg=count
    )


def chat(browser, url):
    """Two people talk and one asks @gpt; the first person's browser state."""
    people = {"first": browser.new_context(), "second": browser.new_context()}
    pages = {who: open_page(context, url) for who, context in people.items()}
    for who, text in CONVERSATION:
        say(pages[who], text)
        pages[who].wait_for_timeout(300)
    for page in pages.values():
        page.wait_for_function(
            """() => { const replies = document.querySelectorAll('#messages > article[data-role="assistant"]');
                       return replies.length > 0 &&
                              Array.from(replies).every((a) => a.dataset.status === 'complete'); }"""
        )
    state = people["first"].storage_state()
    for context in people.values():
        context.close()
    return state


def photograph(browser, url, state):
    os.makedirs(OUT, exist_ok=True)
    for size, (width, height) in SIZES.items():
        for scheme in SCHEMES:
            context = browser.new_context(
                storage_state=state, viewport={"width": width, "height": height}, color_scheme=scheme
            )
            page = open_page(context, url)
            page.evaluate("document.fonts.ready")
            # The composer is focused on load; a picture reads better without
            # its focus ring.
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.wait_for_timeout(300)
            path = os.path.join(OUT, "{}-{}.png".format(size, scheme))
            page.screenshot(path=path)
            context.close()
            print("wrote {} ({:,} bytes)".format(os.path.relpath(path, ROOT), os.path.getsize(path)))


def main():
    with tempfile.TemporaryDirectory() as folder:
        proc, url = start_server(folder)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    state = chat(browser, url)
                    photograph(browser, url, state)
                finally:
                    browser.close()
        finally:
            stop_server(proc)


if __name__ == "__main__":
    main()
