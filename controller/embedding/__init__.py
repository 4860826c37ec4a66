"""Embedding documents: what is embedded (content), by what (embedder), and the cache.

``content`` is pure and used by the engine; ``embedder`` (sentence-transformers) and
``cache`` (SQLite) do I/O and are handed to the engine as ports by the drivers.
"""
