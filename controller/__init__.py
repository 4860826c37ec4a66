"""embrel: blue/green releases of embeddings in Milvus.

The layers, outermost first (import-linter checks the direction):

    cli, demo             what a person runs
    drivers               local: release files + state folder; kube: EmbeddingRelease objects
    engine                observe Milvus, decide the next step, execute it
    ports                 the interfaces the engine needs (Milvus, files, reporting)
    milvus, sources       the only code that talks to pymilvus / reads files
    spec, status, validation.metrics, errors   pure: no I/O
"""

__version__ = "0.1.0"
