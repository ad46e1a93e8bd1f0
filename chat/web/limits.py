"""Rate limits and caps, counted in the database so they hold across workers.

Each check raises ``Refused`` with a message a person can act on.
"""
from datetime import timedelta

from models import STREAMING
from models import AssistantChange
from models import Message
from models import NameChange
from models import ReplyRestart
from models import utcnow


class Refused(Exception):
    """A request that is over a limit; ``status`` is the HTTP status."""

    def __init__(self, text, status=429):
        super().__init__(text)
        self.text = text
        self.status = status


def _since(seconds):
    return utcnow() - timedelta(seconds=seconds)


def _replies_for(session_key):
    return Message.select().where(Message.session_key == session_key, Message.role == "assistant")


def check_post(session_key, asks_model, config):
    """Refuse a post over the per-session rates or the reply caps."""
    mine = Message.select().where(Message.session_key == session_key, Message.role == "user")
    if mine.where(Message.created_at > _since(60)).count() >= config["POSTS_PER_MINUTE"]:
        raise Refused("You are sending messages too fast. Wait a few seconds and try again.")
    if not asks_model:
        return
    check_ask_rate(session_key, config)
    check_reply_capacity(session_key, config)


def check_ask_rate(session_key, config):
    """Refuse a question to the model (a new one, a Retry or a Regenerate) over
    ``ASKS_PER_MINUTE`` for this session."""
    since = _since(60)
    asked = _replies_for(session_key).where(Message.created_at > since).count()
    restarts = ReplyRestart.select().where(ReplyRestart.session_key == session_key, ReplyRestart.created_at > since)
    asked += restarts.count()
    if asked >= config["ASKS_PER_MINUTE"]:
        raise Refused("You have asked @gpt a lot this minute. Wait a little before asking again.")


def check_reply_capacity(session_key, config):
    """Refuse when this session or the whole server already runs its maximum of replies."""
    if _replies_for(session_key).where(Message.status == STREAMING).count() >= config["REPLIES_PER_SESSION"]:
        raise Refused("@gpt is still answering you. Wait for that reply (or stop it) before asking again.")
    running = Message.select().where(Message.status == STREAMING).count()
    if running >= config["MAX_CONCURRENT_REPLIES"]:
        raise Refused("@gpt is busy answering everyone right now. Try again in a moment.", 503)


def check_name_change(session_key, config):
    """Refuse a name change over the per-session rate (``NAME_CHANGES_PER_HOUR``)."""
    limit = config["NAME_CHANGES_PER_HOUR"]
    recent = NameChange.select().where(NameChange.session_key == session_key, NameChange.created_at > _since(3600))
    if recent.count() >= limit:
        raise Refused(
            "You have changed your name {} times in the last hour, the most allowed. "
            "Keep this one for a while.".format(limit)
        )


def record_name_change(session_key):
    """Count a name change, and forget everyone's changes older than the window
    (so sessions that never come back leave nothing behind)."""
    NameChange.delete().where(NameChange.created_at <= _since(3600)).execute()
    NameChange.create(session_key=session_key)


def record_restart(session_key):
    """Count a Retry or Regenerate, and forget everyone's older than the window."""
    ReplyRestart.delete().where(ReplyRestart.created_at <= _since(60)).execute()
    ReplyRestart.create(session_key=session_key)


def check_assistant_change(session_key, config):
    """Refuse a change to a room's assistant over ``ASSISTANT_CHANGES_PER_HOUR``."""
    limit = config["ASSISTANT_CHANGES_PER_HOUR"]
    recent = AssistantChange.select().where(
        AssistantChange.session_key == session_key, AssistantChange.created_at > _since(3600)
    )
    if recent.count() >= limit:
        raise Refused(
            "You have changed rooms' assistants {} times in the last hour, the most allowed. "
            "Try again later.".format(limit)
        )


def record_assistant_change(session_key, room):
    """Count a change to a room's assistant, and forget everyone's older than the window."""
    AssistantChange.delete().where(AssistantChange.created_at <= _since(3600)).execute()
    AssistantChange.create(session_key=session_key, room=room)
