"""The chat: a reply's path from the asker's post to every open page.

``web`` takes the request (routes, forms, refusals) and answers the asker with
the reply's event stream; ``stream`` generates the reply in a greenlet and
commits it in sentence-sized chunks; ``fanout`` pushes each commit to every
page's socket (and, on PostgreSQL, to the other processes); ``render`` turns
Markdown into the sanitized HTML and the small pieces pages apply; ``llm``
talks to the model. ``rooms`` and ``names`` are the rules for room names and
people's names. docs/architecture.md draws the path.
"""
