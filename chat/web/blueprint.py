"""The blueprint every route of the chat is on (its endpoints are
``chat.<function>``, as templates name them), and the app's shared state."""
from flask import Blueprint
from flask import current_app

bp = Blueprint("chat", __name__)


def chat():
    """The app's shared state: hub, generator."""
    return current_app.extensions["chat"]
