"""The web side: routes and forms, the asker's event stream, refusals in
words, request hygiene (CSRF, same-origin sockets) and the per-session limits."""
