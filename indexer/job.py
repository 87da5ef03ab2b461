"""The Python API: :func:`index` runs one indexing job and returns its :class:`Report`.

::

    from zembed.indexer import IndexOptions, index

    report = index(IndexOptions(
        inputs=["s3://bucket/corpus/"], model="/models/zembed-1", collection="docs",
        out="/shards", shards=16,                      # (a) shard stores, one LMDB directory each
        # servers=["shard-0:50051", "shard-1:50051"],  # (b) or running servers, progress_dir=...
    ))
    print(report.to_json())

Ray is started locally (``num_cpus``) unless it already runs in this process or ``ray_address``
names a cluster (``"auto"``: the one this machine belongs to).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zembed.indexer.pipeline import EmbedSettings, Report, run_pipeline
from zembed.indexer.progress import ShardProgress, check_job, progress_path
from zembed.indexer.sources import DEFAULT_FILES_PER_UNIT, DEFAULT_UNIT_BYTES, InputError, plan_units
from zembed.service.ingest import FieldMap
from zembed.store import CollectionConfig, RescoreDtype
from zembed.store.config import Calibration

DEFAULT_CPU_BATCH_TOKENS = 16384  # the server's --max-batch-tokens
DEFAULT_GPU_BATCH_TOKENS = 65536


class IndexError_(ValueError):
    """A job that cannot start (bad options, output of another job); the message says why."""


@dataclass
class IndexOptions:
    inputs: list[str]
    model: str
    collection: str
    out: str | None = None  # (a) shard stores under this folder
    shards: int = 1
    servers: list[str] | None = None  # (b) one address per shard, in shard order
    progress_dir: str | None = None  # (b) where the progress records go (a: the out folder)
    token: str | None = None
    # input
    format: str | None = None  # jsonl | parquet | text (default: by extension)
    id_field: str = "id"
    text_field: str = "text"
    metadata_field: str = "metadata"
    metadata_columns: tuple[str, ...] | None = None
    unit_bytes: int = DEFAULT_UNIT_BYTES
    files_per_unit: int = DEFAULT_FILES_PER_UNIT
    # splitting long documents into passages (service/chunking.py)
    chunk: bool = False
    chunk_tokens: int = 0
    chunk_overlap: int = -1
    # the collection (defaults as the server's CreateCollection)
    code_bits: int = 0
    rescore_dims: int = 0
    rescore_dtype: str = "float16"
    calibration: str = "auto"
    filterable: tuple[str, ...] = ()
    # compute
    ray_address: str | None = None
    num_cpus: int | None = None  # a local Ray instance's CPUs
    gpus: bool | None = None  # None: use the cluster's GPUs when it has any
    actors: int = 0  # CPU: embedding actors (0: CPUs // threads_per_actor)
    threads_per_actor: int = 1
    batch_tokens: int = 0  # padded tokens per ONNX Runtime run (0: 16384 CPU, 65536 GPU)
    batch_rows: int = 0  # rows per actor call (0: from the token budget)
    max_pad_ratio: float = 1.5
    writers: int = 8  # writer actors at most (each owns shards s with s % writers == its number)
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def collection_config(opts: IndexOptions, manifest: Any) -> CollectionConfig:
    """The server's defaults (``Engine.default_config``): 640-bit codes when the model offers 640
    dims, else native; rescore native, float16; calibration auto."""
    code_bits = opts.code_bits or (640 if 640 in manifest.dims else manifest.hidden_size)
    rescore_dims = opts.rescore_dims or manifest.hidden_size
    for dim, what in ((code_bits, "code_bits"), (rescore_dims, "rescore_dims")):
        if dim not in manifest.dims:
            raise IndexError_(f"{what} {dim} is not one of the model's dims {manifest.dims}")
    return CollectionConfig(
        code_bits=code_bits,
        rescore_dims=rescore_dims,
        rescore_dtype=RescoreDtype(opts.rescore_dtype),
        calibration=Calibration(opts.calibration),
        filterable=tuple(opts.filterable),
        model=manifest.model_id,
    )


def _check(opts: IndexOptions) -> None:
    if (opts.out is None) == (opts.servers is None):
        raise IndexError_("give either out (shard stores) or servers (running servers), not both")
    if opts.servers is not None:
        if not opts.servers:
            raise IndexError_("servers: give at least one address")
        if not opts.progress_dir:
            raise IndexError_("writing to servers needs progress_dir (--progress-dir): where the records go")
        if opts.chunk:
            raise IndexError_(
                "chunk with servers: a passage's record is reserved to the server's own splitting; "
                "write shard stores (out) or send text with `zembed ingest --chunk`"
            )
    if not 1 <= opts.shards <= 4096:
        raise IndexError_(f"shards must be in [1, 4096]; given {opts.shards}")
    if opts.format is not None and opts.format not in ("jsonl", "parquet", "text"):
        raise IndexError_(f"format must be jsonl, parquet or text; given {opts.format!r}")
    for name in ("threads_per_actor", "writers"):
        if getattr(opts, name) < 1:
            raise IndexError_(f"{name} must be >= 1; given {getattr(opts, name)}")
    for name in ("actors", "batch_tokens", "batch_rows", "chunk_tokens"):
        if getattr(opts, name) < 0:
            raise IndexError_(f"{name} must be >= 0 (0: chosen); given {getattr(opts, name)}")
    if opts.max_pad_ratio < 1:
        raise IndexError_(f"max_pad_ratio must be >= 1; given {opts.max_pad_ratio}")
    if opts.unit_bytes < 1 or opts.files_per_unit < 1:
        raise IndexError_("unit_bytes and files_per_unit must be >= 1")


def index(opts: IndexOptions) -> Report:
    """Run the job (see the module doc); resumes from the progress records of an earlier run."""
    from zembed.service.runtime.manifest import read_manifest
    from zembed.store import validate

    t0 = time.perf_counter()
    _check(opts)
    validate.name(opts.collection)
    manifest = read_manifest(Path(opts.model))
    config = collection_config(opts, manifest)
    shards = len(opts.servers) if opts.servers is not None else opts.shards
    folder = Path(opts.out if opts.out is not None else str(opts.progress_dir))
    units, skipped_files = plan_units(
        opts.inputs, opts.format, unit_bytes=opts.unit_bytes, files_per_unit=opts.files_per_unit
    )
    if not units:
        raise InputError(
            f"nothing to index in {', '.join(opts.inputs)}"
            + (f" ({len(skipped_files)} files of unknown format; give --format)" if skipped_files else "")
        )
    check_job(
        folder,
        {
            "shards": shards,
            "collection": opts.collection,
            "target": "stores" if opts.servers is None else list(opts.servers),
            "config": config.to_json(),
            "model": manifest.model_id,
            "inputs": list(opts.inputs),
            "chunk": opts.chunk,
        },
    )
    done: set[str] | None = None
    for s in range(shards):
        have = set(ShardProgress(progress_path(folder, s)).load())
        done = have if done is None else done & have
    todo = [u for u in units if u.key not in (done or set())]
    report = Report(units=len(units), units_skipped=len(units) - len(todo), skipped_files=skipped_files)

    import ray

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
        if opts.ray_address:
            ray.init(address=opts.ray_address, **kw)
        else:
            ray.init(num_cpus=opts.num_cpus, **kw)
        started = True
    try:
        writers = _start_writers(ray, opts, folder, shards, config)
        try:
            if todo:
                _run(ray, opts, manifest, config, shards, todo, writers, report)
            counts: dict[int, int] = {}
            for c in ray.get([w.counts.remote() for w in writers]):
                counts.update({int(k): int(v) for k, v in c.items()})
            report.shard_counts = counts
        finally:
            for w in writers:
                with contextlib.suppress(Exception):  # the report matters more than a clean close
                    ray.get(w.close.remote(), timeout=60)
                ray.kill(w)
    finally:
        if started:
            ray.shutdown()
    report.seconds = time.perf_counter() - t0
    return report


def _start_writers(
    ray: Any, opts: IndexOptions, folder: Path, shards: int, config: CollectionConfig
) -> list[Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from zembed.indexer.writers import ServerWriter, StoreWriter

    n = min(shards, opts.writers)
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    out = []
    for w in range(n):
        mine = [s for s in range(shards) if s % n == w]
        if opts.servers is None:
            actor = ray.remote(num_cpus=0, scheduling_strategy=here)(StoreWriter).remote(
                mine, str(folder), opts.collection, config.to_json()
            )
        else:
            actor = ray.remote(num_cpus=0, scheduling_strategy=here)(ServerWriter).remote(
                mine, list(opts.servers), str(folder), opts.collection, config.to_json(), opts.token
            )
        out.append(actor)
    try:
        ray.get([a.counts.remote() for a in out])  # opened (stores locked, collections checked)
    except BaseException:
        for a in out:
            ray.kill(a)
        raise
    return out


def _run(
    ray: Any,
    opts: IndexOptions,
    manifest: Any,
    config: CollectionConfig,
    shards: int,
    todo: list[Any],
    writers: list[Any],
    report: Report,
) -> None:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 if opts.gpus is None else opts.gpus
    if use_gpu and gpus == 0:
        raise IndexError_("gpus requested but the Ray cluster has no GPU")
    cpus = int(resources.get("CPU", 1))
    actors = opts.actors or (gpus if use_gpu else max(1, cpus // opts.threads_per_actor))
    actors = min(actors, len(todo))  # a unit is read as one block: one actor per unit at most
    budget = opts.batch_tokens or (DEFAULT_GPU_BATCH_TOKENS if use_gpu else DEFAULT_CPU_BATCH_TOKENS)
    rows = opts.batch_rows or max(16, min(4096, 4 * budget // max(1, min(manifest.max_length, 512))))
    # an actor takes its threads' CPUs, less a little so the read tasks always find room
    cpus_per_actor = max(0.1, min(float(opts.threads_per_actor), cpus / actors) - 0.25 / actors)
    settings = EmbedSettings(
        model=str(Path(opts.model).resolve()),
        shards=shards,
        code_bits=config.code_bits,
        rescore_dims=config.rescore_dims,
        threads=0 if use_gpu else opts.threads_per_actor,
        gpu=use_gpu,
        batch_tokens=budget,
        max_pad_ratio=opts.max_pad_ratio,
        chunk=opts.chunk,
        chunk_tokens=opts.chunk_tokens,
        chunk_overlap=opts.chunk_overlap,
    )
    report.actors = actors
    report.gpus = gpus if use_gpu else 0
    fm = FieldMap(
        id=opts.id_field,
        text=opts.text_field,
        metadata=opts.metadata_field,
        columns=opts.metadata_columns,
    )
    t = time.perf_counter()
    run_pipeline(
        todo,
        fm,
        settings,
        writers,
        shards,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        batch_rows=rows,
        report=report,
        progress=opts.progress,
    )
    report.pipeline_seconds = time.perf_counter() - t


def summary_line(report: Report) -> str:
    r = report
    return (
        f"{r.documents:,} documents ({r.stored:,} stored as {r.rows:,} rows, {r.failed:,} failed), "
        f"{r.tokens:,} tokens in {r.seconds:.1f} s ({r.docs_per_s:,.0f} docs/s, {r.tokens_per_s:,.0f} "
        f"tokens/s); units: {r.units_done} done, {r.units_skipped} skipped (done earlier) of {r.units}; "
        f"{r.actors} embedding actor(s){f' on {r.gpus} GPU(s)' if r.gpus else ''}"
    )
