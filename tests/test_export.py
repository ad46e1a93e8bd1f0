"""Exporting a room: Markdown and JSON downloads of its whole conversation,
streamed a batch of rows at a time (a room of 100,000 messages in constant
memory), a reply still being written exported as committed so far."""
import json
import tracemalloc

from chat.render.markdown import MD
from chat.web import export
from models import Chunk
from models import Message
from models import db
from models import utcnow


def add(room, author, body, role="user", **fields):
    return Message.create(room=room, author=author, role=role, body=body, **fields)


def sections(markdown):
    """The export's messages: (heading, text) per ``###`` section."""
    parts = markdown.split("\n### ")[1:]
    return [tuple(part.split("\n\n", 1)) if "\n\n" in part else (part, "") for part in parts]


def test_markdown_export_is_the_conversation_in_order(app, client):
    with app.app_context():
        add("book-club", "Ann *Star*", "Has anyone read it?\n# not a heading\n---")
        add("book-club", "gpt", "**Yes.** It is\n\n- long\n- good", role="assistant", model="demo-1")
        add("lobby", "Bob", "elsewhere")
    response = client.get("/r/book-club.md")
    assert response.status_code == 200
    assert response.mimetype == "text/markdown"
    assert response.headers["Content-Disposition"] == 'attachment; filename="book-club.md"'
    assert response.is_streamed
    text = response.get_data(as_text=True)
    assert text.startswith("# #book-club\n")
    found = sections(text)
    assert len(found) == 2, text
    (head1, body1), (head2, body2) = found
    # The name is shown as typed (its Markdown escaped), the person's text quoted line by line.
    assert head1.startswith("Ann \\*Star\\* · ")
    assert body1.strip() == "> Has anyone read it?\n> # not a heading\n> ---"
    assert head2.startswith("gpt (demo-1) · ")
    assert body2.strip() == "**Yes.** It is\n\n- long\n- good"
    assert "elsewhere" not in text
    # Read back as Markdown: exactly one title and two message headings; the
    # person's "# not a heading" stayed inside their quote.
    headings = [t.tag for t in MD.parse(text) if t.type == "heading_open" and t.level == 0]
    assert headings == ["h1", "h3", "h3"]


def test_markdown_export_closes_a_code_block_a_stopped_reply_left_open(app, client):
    with app.app_context():
        add("lobby", "gpt", "Here:\n\n```python\nprint(1)", role="assistant", status="stopped")
        add("lobby", "Ann", "thanks")
    text = client.get("/r/lobby.md").get_data(as_text=True)
    (head1, body1), (head2, body2) = sections(text)
    assert head1.endswith("· *stopped*")
    assert "```python\nprint(1)\n```" in body1
    assert head2.startswith("Ann · ")  # not swallowed by the open block
    fences = [t for t in MD.parse(text) if t.type == "fence"]
    assert [f.content for f in fences] == ["print(1)\n"]


def test_a_reply_being_written_exports_what_is_committed(app, client):
    with app.app_context():
        question = add("lobby", "Ann", "@gpt count")
        reply = Message.new_reply(question, model="demo")
        Chunk.add(reply.id, 1, "One. ")
        Chunk.add(reply.id, 2, "Two. ")
    md = client.get("/r/lobby.md").get_data(as_text=True)
    assert "· *still being written*\n\nOne. Two." in md
    data = json.loads(client.get("/r/lobby.json").get_data(as_text=True))
    row = data["messages"][1]
    assert (row["status"], row["body"], row["reply_to"]) == ("streaming", "One. Two. ", question.id)
    assert "usage" not in row


def test_json_export_has_every_field_a_program_needs(app, client):
    with app.app_context():
        question = add("lobby", "Ann", "@gpt hi \"there\" <b>")
        add(
            "lobby", "gpt", "Hello!", role="assistant", model="demo", reply_to=question.id,
            prompt_tokens=12, completion_tokens=3, ttft_ms=40, generation_ms=90, completed_at=utcnow(),
        )
        add("lobby", "gpt", "", role="assistant", status="failed", error="The model is down.")
    response = client.get("/r/lobby.json")
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == 'attachment; filename="lobby.json"'
    data = json.loads(response.get_data(as_text=True))
    assert data["room"] == "lobby"
    assert data["exported_at"].endswith("Z")
    first, second, third = data["messages"]
    assert first["body"] == "@gpt hi \"there\" <b>"
    assert (first["role"], first["author"], first["reply_to"]) == ("user", "Ann", None)
    assert second["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "first_token_ms": 40, "generation_ms": 90}
    assert second["reply_to"] == first["id"] and second["completed_at"].endswith("Z")
    assert (third["status"], third["error"]) == ("failed", "The model is down.")
    assert "session_key" not in first  # which browser wrote what is not exported


def test_an_empty_room_exports_an_empty_conversation(client):
    assert json.loads(client.get("/r/quiet.json").get_data(as_text=True))["messages"] == []
    assert sections(client.get("/r/quiet.md").get_data(as_text=True)) == []


def test_a_name_that_cannot_be_a_room_is_refused_in_words(client):
    for path in ("/r/Not_A_Room.md", "/r/a..b.json", "/r/-x.md"):
        response = client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 404, path
        assert "Room names are 1 to 32 characters" in response.get_data(as_text=True)


def test_the_room_page_links_its_exports(client):
    html = client.get("/r/book-club").get_data(as_text=True)
    assert 'href="/r/book-club.md" download' in html
    assert 'href="/r/book-club.json" download' in html


def test_a_hundred_thousand_messages_export_in_constant_memory(app, client):
    total = 100_000
    body = "A message of about sixty characters, as people write them."
    with app.app_context(), db.atomic():
        now = utcnow()
        rows = [
            {"room": "big", "author": "Person {}".format(i % 50), "role": "user", "body": body, "created_at": now}
            for i in range(total)
        ]
        for start in range(0, total, 5000):
            Message.insert_many(rows[start:start + 5000]).execute()
    del rows
    for path, count in (("/r/big.json", lambda t: t.count('"role": "user"')), ("/r/big.md", lambda t: t.count("\n### "))):
        response = client.get(path)
        assert response.is_streamed
        tracemalloc.start()
        try:
            seen = 0
            size = 0
            tail = ""
            for piece in response.response:
                text = piece if isinstance(piece, str) else piece.decode("utf-8")
                size += len(text)
                seen += count(tail + text) - count(tail)
                tail = text[-20:]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seen == total, path
        # The whole export is several MB (and loading it all peaks near 10 times
        # that); what it holds at once is about one batch.
        assert size > 6_000_000
        assert peak < 5_000_000, "{}: peak {:,} bytes for a {:,}-byte export".format(path, peak, size)


def test_batches_take_every_row_once_across_batch_edges(app):
    with app.app_context():
        ids = [add("edge", "Ann", str(i)).id for i in range(7)]
        add("other", "Bob", "not this")
        seen = [[m.id for m in rows] for rows in export.batches("edge", size=3)]
    assert seen == [ids[0:3], ids[3:6], ids[6:7]]
