"""Print what Milvus holds for an alias prefix as JSON, using pymilvus directly.

Runs in its own process because Milvus Lite locks its folder to one process: the
test process must not hold it while the CLI under test runs.

    python -m tests.support.inspect_milvus URI ALIAS
"""

from __future__ import annotations

import json
import logging
import sys

from pymilvus import MilvusClient


def inspect(uri: str, alias: str) -> dict[str, object]:
    client = MilvusClient(uri=uri)
    try:
        try:
            target = client.describe_alias(alias)["collection_name"]
        except Exception:
            target = None
        collections = {}
        for name in client.list_collections():
            if not name.startswith(f"{alias}__"):
                continue
            state = str(client.get_load_state(name)["state"])
            collections[name] = {
                "loaded": state.endswith("Loaded") and "Not" not in state,
                "rows": int(client.get_collection_stats(name)["row_count"]),
                "properties": client.describe_collection(name).get("properties", {}),
                "aliases": client.list_aliases(name).get("aliases", []),
            }
        return {"alias_target": target, "collections": collections}
    finally:
        client.close()


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    print(json.dumps(inspect(sys.argv[1], sys.argv[2]), default=str))
