"""The built-in demo model: plausible Markdown replies at a realistic pace,
offline and with no key, so the app can be tried in a minute."""
import random
import re

import gevent

from chat.llm.tokens import TokenStream

_DEMO_REPLIES = [
    """Good question, {name}! Here is how I would think about it.

Streaming a reply token by token feels fast, but storing every token would be wasteful. So this chat **persists whole sentences** and pushes each one to everyone watching.

A few things make that work:

- the asker reads tokens straight from the generator
- observers get one small fragment per committed sentence
- a reload shows what is stored and follows the rest

```python
for chunk in chunker.feed(token):
    commit(chunk)
    hub.publish(chunk)
```

That keeps bandwidth linear in the length of the reply. Anything else you would like to know?""",
    """Happy to help, {name}. Let me break it down.

The short answer is *it depends on what you measure*. Latency, throughput and cost pull in different directions, so pick the one that matters most first.

1. Measure the baseline before changing anything
2. Change one thing at a time
3. Keep the numbers in a table you can compare

```sql
SELECT status, count(*) FROM message GROUP BY status;
```

If the numbers still surprise you, look at where the time goes with a profiler. Does that answer it?""",
    """Sure thing, {name}. Here is a quick overview.

A websocket keeps one connection open per page, so the server can push a fragment the moment a sentence is stored. Server-Sent Events do the same in one direction over a normal response.

Things to keep in mind:

- proxies close idle connections, so send a keep-alive now and then
- a reconnect replays nothing, so send a snapshot on every connect
- one writer per socket keeps frames in order

```js
htmx.on("htmx:ws:after:connection", () => console.log("live"));
```

Both are plain HTTP underneath, which is why they deploy anywhere. What are you building?""",
]

_TOKEN = re.compile(r"\s*\S+|\s+")


def demo_tokens(text):
    """Split text into word-sized tokens that keep their leading whitespace,
    with punctuation as its own token, the way real models emit them."""
    tokens = []
    for piece in _TOKEN.findall(text):
        core = piece.rstrip(".,!?;:")
        if core and core != piece and core.strip():
            tokens.extend([core, piece[len(core):]])
        else:
            tokens.append(piece)
    return tokens


class DemoProvider:
    """An offline model: plausible Markdown at a realistic pace, no key needed."""

    model = "demo"

    def __init__(self, token_delay=0.03, first_token_delay=0.4):
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay

    def models(self):
        return [self.model]

    def stream(self, messages, model=None):
        asker = "there"
        question = ""
        for message in reversed(messages):
            if message["role"] == "user":
                asker, _, question = message["content"].partition(": ")
                break
        rng = random.Random(question)
        text = rng.choice(_DEMO_REPLIES).format(name=asker)
        tokens = demo_tokens(text)
        stream = TokenStream(None)
        closed = []

        def generate():
            gevent.sleep(self.first_token_delay)
            for token in tokens:
                if closed:
                    return
                yield token
                gevent.sleep(self.token_delay * rng.uniform(0.5, 1.5))
            prompt = sum(len(m["content"].split()) for m in messages)
            stream.usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens)}

        stream._tokens = generate()
        stream._close = lambda: closed.append(True)
        return stream
