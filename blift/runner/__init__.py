"""The runner: maps stages over shards, resumably (local process pool)."""
