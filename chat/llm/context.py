"""What the model is sent with a question: the system prompt (with the room's
own instructions for its assistant), the room's
recent history with each message under its author's name, trimmed oldest
first to fit the model's context window."""

SYSTEM_PROMPT = (
    "You are gpt, a helpful assistant in a group chat. Several people talk here; "
    "their messages are prefixed with their names. Answer the person who mentioned "
    "you, concisely, in Markdown."
)


def room_prompt(instructions=None):
    """The system prompt for a room whose people gave its assistant
    ``instructions`` (a persona, a language, a focus), or the default."""
    if not instructions:
        return SYSTEM_PROMPT
    return "{}\n\nThe people of this room asked you to follow these instructions:\n{}".format(
        SYSTEM_PROMPT, instructions
    )


def build_context(history, system_prompt=SYSTEM_PROMPT):
    """Chat Completions messages from a room's recent history (oldest first)."""
    messages = [{"role": "system", "content": system_prompt}]
    for message in history:
        if message.role == "assistant":
            if message.body:
                messages.append({"role": "assistant", "content": message.body})
        else:
            messages.append({"role": "user", "content": "{}: {}".format(message.author, message.body)})
    return messages


def fold_system_prompt(messages):
    """The messages with the system prompt moved to the front of the first
    user turn, for chat formats that have no system role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, message in enumerate(rest):
        if message["role"] == "user":
            rest[i] = {"role": "user", "content": "{}\n\n{}".format(system, message["content"])}
            return rest
    return [{"role": "user", "content": system}] + rest


def estimate_tokens(message):
    """A cheap, deliberately high guess at the tokens a chat message takes: one
    per three bytes of UTF-8 (tokenizers average about four characters per
    token in English and close to one per character in CJK scripts), plus the
    turn's own markers."""
    return len(message["content"].encode("utf-8")) // 3 + 4


def fit_context(messages, budget):
    """Drop the oldest history until ``messages`` fit ``budget`` tokens (by
    ``estimate_tokens``); the system prompt (first) and the question (last)
    always stay. Returns (messages, how many were dropped)."""
    if budget <= 0 or len(messages) <= 2:
        return messages, 0
    head, history, question = messages[:1], list(messages[1:-1]), messages[-1:]
    total = sum(estimate_tokens(m) for m in messages)
    dropped = 0
    while history and total > budget:
        total -= estimate_tokens(history.pop(0))
        dropped += 1
    return head + history + question, dropped
