"""Child process for the router tests: one shard server (the real server around the fake embedder, a
real LMDB store in DIR) whose searches take DELAY seconds, so a test can kill it mid-query.

Usage: python -m tests.router_shard_child DIR DELAY; prints "port N" once serving, then serves until
killed."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

from tests.fakes import FakeServer
from zembed.service.searcher import SearchScheduler
from zembed.store import Collection, Hit
from zembed.store.params import SearchParams


def main() -> None:
    path, delay = Path(sys.argv[1]), float(sys.argv[2])
    plain = SearchScheduler.search

    async def slow(
        self: SearchScheduler, coll: Collection, code: Any, rescore: Any, p: SearchParams
    ) -> list[Hit]:
        await asyncio.sleep(delay)
        return await plain(self, coll, code, rescore, p)

    SearchScheduler.search = slow  # type: ignore[method-assign]
    server = FakeServer(path)
    print(f"port {server.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
