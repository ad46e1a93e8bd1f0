"""The model: the OpenAI-compatible provider, the built-in demo model, the
context sent with each question, and the local llama.cpp server."""
