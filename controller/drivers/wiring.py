"""What both drivers build an engine from: the Milvus connection first.

``connect_milvus`` is looked up at call time, so an in-process test can put an
in-memory ``MilvusPort`` (tests/support/fake_milvus.py) behind every release.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.config import Credentials
from controller.milvus import MilvusGateway, RetryPolicy
from controller.ports import MilvusPort

MilvusObserver = Callable[[str, float, str | None], None]


def connect_milvus(
    uri: str,
    db: str,
    credentials: Credentials,
    policy: RetryPolicy,
    observer: MilvusObserver | None = None,
) -> MilvusPort:
    """A connection to the Milvus at ``uri`` (a server URL or a Milvus Lite file)."""
    return MilvusGateway(uri, db, credentials, policy, observer=observer)
