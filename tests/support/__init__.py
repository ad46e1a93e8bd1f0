"""What the tests share (and the benchmark reuses): the fake OpenAI-compatible
server, a private PostgreSQL, clients for a live server, a model of a reply's
body as pages build it, and the headless-browser plumbing."""
