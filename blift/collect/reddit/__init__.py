"""Reddit sources: ``reddit.list`` and ``reddit.collect`` through praw, ``reddit.dumps`` from
Pushshift / Arctic-Shift files."""
