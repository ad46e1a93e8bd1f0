"""``python -m bench.run``: the benchmark of the streaming chat on a real server.

The modules follow a run: ``replies`` makes the synthetic text, ``fake_model``
streams it, ``server`` starts the app under gunicorn, ``clients`` ask and
watch, ``wire`` and ``sqltrace`` read what crossed the network and the
database, ``meters`` reads CPU and memory; ``bandwidth``, ``capacity`` and
``idle`` are the measurements, and ``report``, ``tables``, ``analysis`` and
``plots`` write them up.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project
HOOK_DIR = os.path.dirname(os.path.abspath(__file__))  # holds sitecustomize.py
