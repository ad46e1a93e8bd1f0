"""A first conversation on a fresh database, so a newcomer sees a reply stream."""
from faker import Faker

from chat.rooms import DEFAULT_ROOM as ROOM
from models import Flag
from models import Message
from models import Room


def seed_if_empty(app):
    """On an empty database (once, race-free), post a short conversation that
    ends with an ``@gpt`` question and start generating its reply."""
    if not app.config["SEED_DEMO"]:
        return None
    if Message.select().where(Message.room == ROOM).exists():
        return None
    if not Flag.set_once("seeded"):
        return None
    fake = Faker()
    fake.seed_instance(7)
    ada, bo, cy = (fake.name() for _ in range(3))
    lines = [
        (ada, "Morning all! Is the streaming chat up?"),
        (bo, "It is. Replies grow token by token for whoever asks, and a sentence at a time for everyone else."),
        (cy, "@gpt how does this chat keep bandwidth low while a reply streams?"),
    ]
    question = None
    for author, body in lines:
        question = Message.create(room=ROOM, author=author, role="user", body=body)
    Room.touch(ROOM, len(lines) + 1)
    generator = app.extensions["chat"]["generator"]
    reply = Message.new_reply(question, model=getattr(generator.provider, "model", None))
    return generator.start(reply)
