"""Fan-out: each commit, rendered once, reaches every open page of its room
through the in-process hub and the page sockets, and other processes'
commits arrive through the PostgreSQL relay."""
