from typing import Any

def scan_topk(
    queries: Any,
    codes: Any,
    words: int,
    mask: Any | None,
    base: int,
    heap_dist: Any,
    heap_idx: Any,
    heap_count: Any,
) -> None: ...
def distances(queries: Any, codes: Any, words: int, out: Any) -> None: ...
def read_sum(buffer: Any) -> int: ...
def kernel() -> str: ...
