"""Control for the Search RPC benchmark: a bare gRPC asyncio server (no service code, no protobuf
messages) whose one unary method reads a buffer of N bytes, the size of the collection's code index,
as the scan does, and answers 200 bytes.

Its RPC time over the same in-process read shows what gRPC-Python and this machine alone add to a
memory-bound call of that size.   python bench/null_server.py BYTES   (prints the port)
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from floor import read_sum

METHOD = "/bench.Null/Read"


def buffer(nbytes: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2**63, size=max(1, nbytes // 8), dtype=np.uint64)


async def serve(nbytes: int) -> None:
    buf = buffer(nbytes)

    async def read(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        read_sum(buf)
        return b"x" * 200

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Null", {"Read": grpc.unary_unary_rpc_method_handler(read)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
