"""Where embedded documents go: shard stores written directly, or running servers over UpsertStream.

A writer owns some shards (Ray actors run one writer each, see ``pipeline``). ``write`` stores one
shard's rows durably and returns how many were stored and which were refused (id, why): a batch the
store refuses as a whole is retried row by row so that one bad document names itself and the others
are stored. ``finish`` appends the progress records of units whose rows are all stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.indexer.progress import ShardProgress, progress_path, shard_name
from zembed.store import CollectionConfig

F32 = npt.NDArray[np.float32]
Failure = tuple[str, str]  # (id, why)
MESSAGE_DOCS = 1000  # documents per UpsertStream message (the bulk form takes 1 to 10,000)


def _dedupe(
    ids: Sequence[str], code: F32, rescore: F32 | None, metas: Sequence[str]
) -> tuple[list[str], F32, F32 | None, list[str]]:
    """The last row of each id (upsert semantics: a later row with the same id wins)."""
    last = {d: i for i, d in enumerate(ids)}
    if len(last) == len(ids):
        return list(ids), code, rescore, list(metas)
    keep = sorted(last.values())
    return (
        [ids[i] for i in keep],
        code[keep],
        rescore[keep] if rescore is not None else None,
        [metas[i] for i in keep],
    )


class ShardWriter:
    """Base: progress records in ``progress_dir``; subclasses store rows."""

    def __init__(self, shards: Sequence[int], progress_dir: str) -> None:
        self.shards = list(shards)
        self.progress = {s: ShardProgress(progress_path(Path(progress_dir), s)) for s in self.shards}

    def done_units(self) -> dict[int, list[str]]:
        return {s: sorted(p.load()) for s, p in self.progress.items()}

    def finish(self, records: dict[int, list[dict[str, Any]]]) -> None:
        """Progress lines per shard (called once the units' rows are stored on every shard)."""
        for s, recs in records.items():
            if s in self.progress:
                self.progress[s].append(recs)

    def write(
        self, shard: int, ids: list[str], code: F32, rescore: F32 | None, metas: list[str]
    ) -> tuple[int, list[Failure]]:
        ids, code, rescore, metas = _dedupe(ids, code, rescore, metas)
        try:
            self._write(shard, ids, code, rescore, metas)
            return len(ids), []
        except Exception as exc:
            if len(ids) == 1 or not self._retry_rows(exc):
                if len(ids) == 1:
                    return 0, [(ids[0], _why(exc))]
                raise
        stored = 0
        failures: list[Failure] = []
        for i in range(len(ids)):
            n, f = self.write(
                shard, [ids[i]], code[i : i + 1], None if rescore is None else rescore[i : i + 1], [metas[i]]
            )
            stored += n
            failures += f
        return stored, failures

    def _retry_rows(self, exc: Exception) -> bool:
        """Whether a failed batch may hold one bad row (retry row by row) rather than a dead target."""
        return True

    def _write(self, shard: int, ids: list[str], code: F32, rescore: F32 | None, metas: list[str]) -> None:
        raise NotImplementedError

    def counts(self) -> dict[int, int]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class StoreWriter(ShardWriter):
    """Shard stores: ``<out>/shard-NNNNN/`` (one LMDB data directory each, ready to serve)."""

    def __init__(
        self,
        shards: Sequence[int],
        out: str,
        collection: str,
        config: dict[str, Any],
        lock_wait_s: float = 60.0,
    ) -> None:
        super().__init__(shards, out)
        from zembed.store import Store
        from zembed.store.errors import Locked

        cfg = CollectionConfig.from_json(config)
        self.collection = collection
        self.stores: dict[int, Any] = {}
        self.colls: dict[int, Any] = {}
        for s in self.shards:
            deadline = time.monotonic() + lock_wait_s
            while True:
                try:
                    store = Store(Path(out) / shard_name(s))
                    break
                except Locked:
                    # a killed run's writer may still be exiting (its lock goes with its process)
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            self.stores[s] = store
            try:
                store.ensure_collection(collection, cfg)
            except BaseException:
                self.close()  # refused: release every lock taken here
                raise
            self.colls[s] = store.collection(collection)

    def _write(self, shard: int, ids: list[str], code: F32, rescore: F32 | None, metas: list[str]) -> None:
        meta = [json.loads(m) if m else None for m in metas]
        # the store's bulk path: one durable batch from the arrays (code vectors default to the
        # rescore vectors when the dims agree)
        if rescore is None:
            self.colls[shard].upsert_arrays(np.asarray(ids), code, metadata=meta)
        else:
            self.colls[shard].upsert_arrays(np.asarray(ids), rescore, code, metadata=meta)

    def _retry_rows(self, exc: Exception) -> bool:
        from zembed.store.errors import InvalidArgument

        return isinstance(exc, InvalidArgument)

    def counts(self) -> dict[int, int]:
        return {s: int(c.count()) for s, c in self.colls.items()}

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()


class ServerWriter(ShardWriter):
    """Running servers, one per shard (``addresses[shard]``), over UpsertStream's bulk form with
    precomputed vectors (the servers embed nothing); every document is acknowledged once durable."""

    def __init__(
        self,
        shards: Sequence[int],
        addresses: Sequence[str],
        progress_dir: str,
        collection: str,
        config: dict[str, Any],
        token: str | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        super().__init__(shards, progress_dir)
        import grpc

        from zembed.v1 import zembed_pb2 as pb
        from zembed.v1 import zembed_pb2_grpc as pb_grpc

        self.pb = pb
        self.collection = collection
        self.timeout_s = timeout_s
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        cfg = CollectionConfig.from_json(config)
        self.same_dims = cfg.code_bits == cfg.rescore_dims
        opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        self.addresses = {s: addresses[s] for s in self.shards}
        self.channels = {s: grpc.insecure_channel(addresses[s], options=opts) for s in self.shards}
        self.stubs = {s: pb_grpc.SearchServiceStub(ch) for s, ch in self.channels.items()}  # type: ignore[no-untyped-call]
        for s, stub in self.stubs.items():
            self._ensure_collection(s, stub, cfg)

    def _ensure_collection(self, shard: int, stub: Any, cfg: CollectionConfig) -> None:
        import grpc

        pb = self.pb
        try:
            got = stub.GetCollection(
                pb.GetCollectionRequest(name=self.collection), metadata=self.metadata, timeout=60
            ).collection.config
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise RuntimeError(
                    f"shard {shard} at {self.addresses[shard]}: {exc.code().name}: {exc.details()}"
                ) from None
            stub.CreateCollection(
                pb.CreateCollectionRequest(
                    name=self.collection,
                    config=pb.CollectionConfig(
                        code_bits=cfg.code_bits,
                        rescore_dims=cfg.rescore_dims,
                        rescore_dtype=cfg.rescore_dtype.value,
                        calibration=cfg.calibration.value,
                        calibration_sample=cfg.calibration_sample,
                        filterable=list(cfg.filterable),
                    ),
                ),
                metadata=self.metadata,
                timeout=60,
            )
            return
        if (got.code_bits, got.rescore_dims) != (cfg.code_bits, cfg.rescore_dims):
            raise RuntimeError(
                f"shard {shard} at {self.addresses[shard]}: collection {self.collection!r} has code_bits "
                f"{got.code_bits} and rescore_dims {got.rescore_dims}; this job writes {cfg.code_bits} "
                f"and {cfg.rescore_dims}"
            )

    def write(
        self, shard: int, ids: list[str], code: F32, rescore: F32 | None, metas: list[str]
    ) -> tuple[int, list[Failure]]:
        # UpsertStream's bulk form: MESSAGE_DOCS documents per message, one status per document in
        # order (the server halves a refused batch until the refused documents stand alone)
        ids, code, rescore, metas = _dedupe(ids, code, rescore, metas)
        from zembed.service.metadata import metadata_to_proto

        pb = self.pb
        code = np.ascontiguousarray(code, dtype="<f4")
        resc = None if rescore is None else np.ascontiguousarray(rescore, dtype="<f4")

        def doc(i: int) -> Any:
            vec = pb.Vectors(code_f32le=code[i].tobytes())
            if resc is not None and not self.same_dims:
                vec.rescore_f32le = resc[i].tobytes()
            d = pb.Document(id=ids[i], vectors=vec)
            if metas[i]:
                for k, v in metadata_to_proto(json.loads(metas[i])).items():
                    d.metadata[k].CopyFrom(v)
            return d

        starts = list(range(0, len(ids), MESSAGE_DOCS))

        def requests() -> Any:
            for a in starts:
                docs = [doc(i) for i in range(a, min(a + MESSAGE_DOCS, len(ids)))]
                yield pb.UpsertStreamRequest(collection=self.collection, documents=docs)

        stored = 0
        failures: list[Failure] = []
        answered = 0
        call = self.stubs[shard].UpsertStream(requests(), metadata=self.metadata, timeout=self.timeout_s)
        for m, resp in enumerate(call):
            a = starts[m]
            for j, st in enumerate(resp.statuses):
                answered += 1
                if st.code == 0:
                    stored += 1
                else:
                    failures.append((ids[a + j], f"refused by {self.addresses[shard]}: {st.message}"))
        if answered != len(ids):
            raise RuntimeError(
                f"shard {shard} at {self.addresses[shard]}: the stream ended after {answered} of "
                f"{len(ids)} acknowledgements"
            )
        return stored, failures

    def counts(self) -> dict[int, int]:
        pb = self.pb
        out = {}
        for s, stub in self.stubs.items():
            resp = stub.GetCollection(
                pb.GetCollectionRequest(name=self.collection), metadata=self.metadata, timeout=60
            )
            out[s] = int(resp.collection.count)
        return out

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
