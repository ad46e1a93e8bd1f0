"""Generating a reply: one greenlet per reply reads the model, feeds the
asker's stream token by token and commits sentence-sized chunks; the watchdog
settles replies whose process is gone."""
