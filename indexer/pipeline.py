"""The Ray Data pipeline: units -> rows -> embedded, binarized and stored on their shards.

::

    from_items(units not yet done)                       driver: plan, skip finished units
      .map_batches(read)                  Ray tasks      one unit -> its rows (bad records kept, marked)
      .map_batches(EmbedStage, ActorPoolStrategy)        one ONNX Runtime session per actor
            tokenize (optionally split long documents into passages), sort by length, run sub-batches
            within the token budget, project to the collection's code and rescore dims, group rows by
            shard_of(document id, shards) and hand each shard's rows to its writer actor (waits for
            the durable commit), then emit one small summary row per unit
      driver: iter_batches over the summaries -> when all rows of a unit are stored, every writer
            appends the unit to its shards' progress records; progress bar; the final report

The vectors go from the embedding actors to the writer actors directly (Ray's object store), never
through the driver. Writer actors take no CPU slot (``num_cpus=0``) and, for shard stores, run on
the driver's node (where the output folder is) unless the folder is shared.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.indexer.sources import ROW_COLUMNS, Unit, read_unit
from zembed.service.ingest import FieldMap

F32 = npt.NDArray[np.float32]
MAX_FAILURES_KEPT = 1000
# the error of a unit that could not be read at all: reported, and the unit is not recorded as done
# (a re-run tries it again)
UNREADABLE = "unit unreadable, not recorded (a re-run retries it): "


# ---------------------------------------------------------------- stage 1: read
def read_batch(batch: dict[str, Any], fm: FieldMap) -> dict[str, Any]:
    """Units (one per batch row) -> their rows; an empty unit yields one placeholder row (id "")
    so that the driver still sees it finish."""
    cols: dict[str, list[Any]] = {c: [] for c in (*ROW_COLUMNS, "unit", "unit_rows")}
    for raw in batch["unit"]:
        unit = Unit.from_dict(json.loads(raw))
        try:
            rows = read_unit(unit, fm)
        except Exception as exc:  # unreadable now (a network filesystem?): one failure, not recorded
            rows = [{"id": "", "text": "", "meta": "", "error": f"{UNREADABLE}{exc}", "where": unit.key}]
        n = len(rows)
        if not rows:
            rows = [{"id": "", "text": "", "meta": "", "error": "", "where": ""}]
        for r in rows:
            for c in ROW_COLUMNS:
                cols[c].append(r[c])
            cols["unit"].append(unit.key)
            cols["unit_rows"].append(n)
    return {k: np.asarray(v, dtype=object if k != "unit_rows" else np.int64) for k, v in cols.items()}


# ---------------------------------------------------------------- stage 2: embed and write
@dataclass(frozen=True)
class EmbedSettings:
    model: str
    shards: int
    code_bits: int
    rescore_dims: int
    threads: int = 0  # ONNX Runtime intra-op threads (0: its default)
    gpu: bool = False
    batch_tokens: int = 16384  # padded tokens (rows x longest) per ONNX Runtime run
    max_pad_ratio: float = 1.5
    chunk: bool = False
    chunk_tokens: int = 0  # 0: min(512, the model's window)
    chunk_overlap: int = -1  # -1: chunk_tokens // 8
    input_type: str = "document"


def split_by_budget(lengths: Sequence[int], budget: int, max_pad_ratio: float) -> list[list[int]]:
    """Indices sorted by length, cut into runs whose rows x longest stays within ``budget`` padded
    tokens and whose longest is at most ``max_pad_ratio`` x their shortest (the server's batcher
    rule)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        n = max(lengths[i], 1)
        if cur and ((len(cur) + 1) * n > budget or n > max_pad_ratio * max(lengths[cur[0]], 1)):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


class EmbedStage:
    """A Ray Data actor: one ONNX Runtime session (``EmbeddingModel``, the server's runtime) and the
    writer actors' handles."""

    def __init__(self, settings: EmbedSettings, writers: list[Any]) -> None:
        from zembed.service.runtime.model import EmbeddingModel

        self.s = settings
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if settings.gpu else None
        self.model = EmbeddingModel(settings.model, providers=providers, intra_op_threads=settings.threads)
        self.writers = writers
        m = self.model.manifest
        self.chunk_tokens = min(settings.chunk_tokens or 512, m.max_length)
        overlap = settings.chunk_overlap
        self.chunk_overlap = self.chunk_tokens // 8 if overlap < 0 else overlap

    def _passages(self, doc_id: str, text: str, meta: str) -> list[tuple[str, str, str]]:
        """Rows of a split document exactly as the server's chunking stores them (service/passages.py):
        passage 0 under the document's id, n > 0 under ``<id>\\x1f<n>``, each with the document's
        metadata and its passage under the reserved key (document id, index, offsets, text; the
        first row also the passage count), so a server mounting the shard answers ``Hit.passage``
        and replaces the passages when the document is upserted again."""
        from zembed.service import chunking
        from zembed.service.convert import PASSAGE_KEY
        from zembed.service.passages import MAX_CHUNKED_ID_BYTES, row_id

        size = len(doc_id.encode("utf-8", errors="surrogatepass"))
        if size > MAX_CHUNKED_ID_BYTES:
            raise ValueError(
                f"must be at most {MAX_CHUNKED_ID_BYTES} UTF-8 bytes with --chunk (passage ids add a "
                f"suffix); given {size}"
            )

        def count(texts: Sequence[str]) -> list[int]:
            return self.model.text.count(texts, self.s.input_type)

        parts = chunking.chunk_document(text, None, count, self.chunk_tokens, self.chunk_overlap).passages
        base = json.loads(meta) if meta else {}
        out = []
        for n, p in enumerate(parts):
            d: dict[str, Any] = {"doc": doc_id, "i": n, "s": p.start, "e": p.end, "t": p.text}
            if n == 0:
                d["n"] = len(parts)
            m = json.dumps({**base, PASSAGE_KEY: d}, separators=(",", ":"), ensure_ascii=False)
            out.append((row_id(doc_id, n), p.text, m))
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        units = list(batch["unit"])
        per_unit: dict[str, dict[str, Any]] = {}
        for u, n in zip(units, batch["unit_rows"], strict=True):
            per_unit.setdefault(
                u,
                {
                    "unit_rows": int(n),
                    "docs": 0,
                    "stored": 0,
                    "rows": 0,
                    "tokens": 0,
                    "failures": [],
                    "retry": False,
                },
            )
        # rows to embed: (doc index, row id, text, meta)
        rows: list[tuple[int, str, str, str]] = []
        for i, (doc_id, text, meta, err, where) in enumerate(
            zip(batch["id"], batch["text"], batch["meta"], batch["error"], batch["where"], strict=True)
        ):
            u = per_unit[units[i]]
            if not doc_id and not err:  # an empty unit's placeholder
                continue
            u["docs"] += 1
            if err.startswith(UNREADABLE):
                u["retry"] = True
            if err:
                u["failures"].append(f"{where}: {err}")
                continue
            if self.s.chunk:
                try:
                    rows += [(i, rid, t, m) for rid, t, m in self._passages(doc_id, text, meta)]
                except Exception as exc:
                    u["failures"].append(f"{where}: id {doc_id!r}: {exc}")
            else:
                rows.append((i, doc_id, text, meta))
        if rows:
            self._embed_and_write(batch, units, rows, per_unit)
        keys = list(per_unit)
        return {
            "unit": np.asarray(keys, dtype=object),
            "unit_rows": np.asarray([per_unit[k]["unit_rows"] for k in keys], dtype=np.int64),
            "docs": np.asarray([per_unit[k]["docs"] for k in keys], dtype=np.int64),
            "stored": np.asarray([per_unit[k]["stored"] for k in keys], dtype=np.int64),
            "rows": np.asarray([per_unit[k]["rows"] for k in keys], dtype=np.int64),
            "tokens": np.asarray([per_unit[k]["tokens"] for k in keys], dtype=np.int64),
            "failures": np.asarray([json.dumps(per_unit[k]["failures"]) for k in keys], dtype=object),
            "retry": np.asarray([per_unit[k]["retry"] for k in keys], dtype=bool),
        }

    def _embed_and_write(
        self,
        batch: dict[str, Any],
        units: list[str],
        rows: list[tuple[int, str, str, str]],
        per_unit: dict[str, dict[str, Any]],
    ) -> None:
        import ray

        from zembed.store.sharding import shard_of

        m = self.model
        ids = m.encode([r[2] for r in rows], self.s.input_type)
        emb = np.empty((len(rows), m.manifest.hidden_size), dtype=np.float32)
        for part in split_by_budget([len(x) for x in ids], self.s.batch_tokens, self.s.max_pad_ratio):
            emb[part] = m.run([ids[i] for i in part])
        code = m.project(emb, self.s.code_bits)
        resc = None if self.s.rescore_dims == self.s.code_bits else m.project(emb, self.s.rescore_dims)
        doc_ids = [str(batch["id"][r[0]]) for r in rows]
        shard = np.fromiter((shard_of(d, self.s.shards) for d in doc_ids), dtype=np.int64, count=len(rows))
        pending = []
        for s in np.unique(shard):
            idx = np.flatnonzero(shard == s)
            w = self.writers[int(s) % len(self.writers)]
            ref = w.write.remote(
                int(s),
                [rows[i][1] for i in idx],
                code[idx],
                None if resc is None else resc[idx],
                [rows[i][3] for i in idx],
            )
            pending.append((idx, ref))
        bad: dict[str, str] = {}
        for _, ref in pending:
            _, failures = ray.get(ref)
            bad.update(failures)
        doc_ok: dict[int, bool] = {}
        for i, (d, rid, _, _) in enumerate(rows):
            u = per_unit[units[d]]
            u["tokens"] += len(ids[i])
            if rid in bad:
                u["failures"].append(f"{batch['where'][d]}: id {rid!r}: {bad[rid]}")
                doc_ok[d] = False
            else:
                u["rows"] += 1
                doc_ok.setdefault(d, True)
        for d, ok in doc_ok.items():
            if ok:
                per_unit[units[d]]["stored"] += 1


# ---------------------------------------------------------------- the driver
@dataclass
class Report:
    units: int = 0
    units_skipped: int = 0  # finished in an earlier run
    units_done: int = 0
    documents: int = 0  # records read (good and bad)
    stored: int = 0  # documents stored (all their rows)
    rows: int = 0  # rows stored (passages when splitting)
    tokens: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    pipeline_seconds: float = 0.0  # from the first batch submitted (Ray started, actors created)
    shard_counts: dict[int, int] = field(default_factory=dict)
    actors: int = 0
    gpus: int = 0

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "units_skipped": self.units_skipped,
            "units_done": self.units_done,
            "documents": self.documents,
            "stored": self.stored,
            "rows": self.rows,
            "tokens": self.tokens,
            "failed": self.failed,
            "failures": self.failures[:MAX_FAILURES_KEPT],
            "skipped_files": self.skipped_files,
            "seconds": round(self.seconds, 3),
            "pipeline_seconds": round(self.pipeline_seconds, 3),
            "docs_per_s": round(self.docs_per_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "shard_counts": {str(k): v for k, v in sorted(self.shard_counts.items())},
            "actors": self.actors,
            "gpus": self.gpus,
        }


def _log(msg: str) -> None:
    print(f"zembed index: {msg}", file=sys.stderr, flush=True)


def run_pipeline(
    todo: list[Unit],
    fm: FieldMap,
    settings: EmbedSettings,
    writers: list[Any],
    shards: int,
    *,
    actors: int,
    cpus_per_actor: float,
    batch_rows: int,
    report: Report,
    progress: bool,
) -> None:
    """Run the dataset over ``todo``; appends finished units to the progress records as they finish."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"unit": json.dumps(u.to_dict())} for u in todo]
    ds: Any = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1000)))
    ds = ds.map_batches(read_batch, fn_kwargs={"fm": fm}, batch_size=1, batch_format="numpy", num_cpus=0.25)
    ds = ds.map_batches(
        EmbedStage,
        fn_constructor_kwargs={"settings": settings, "writers": writers},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_rows,
        batch_format="numpy",
        num_cpus=0 if settings.gpu else cpus_per_actor,
        num_gpus=1 if settings.gpu else 0,
    )
    from tqdm import tqdm

    bar = tqdm(
        total=len(todo), unit="unit", disable=not progress, dynamic_ncols=True, file=sys.stderr, smoothing=0.1
    )
    seen: dict[str, int] = defaultdict(int)
    retry: set[str] = set()
    acc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    t0 = time.perf_counter()
    for out in ds.iter_batches(batch_format="numpy", batch_size=None):
        finished: list[str] = []
        for j, key in enumerate(out["unit"]):
            key = str(key)
            docs = int(out["docs"][j])
            seen[key] += docs
            a = acc[key]
            for c in ("stored", "rows", "tokens"):
                a[c] += int(out[c][j])
            fails = json.loads(out["failures"][j])
            a["failed"] += len(fails)
            report.documents += docs
            report.stored += int(out["stored"][j])
            report.rows += int(out["rows"][j])
            report.tokens += int(out["tokens"][j])
            report.failed += len(fails)
            room = MAX_FAILURES_KEPT - len(report.failures)
            if room > 0:
                report.failures += fails[:room]
            if bool(out["retry"][j]):
                retry.add(key)
            if seen[key] == int(out["unit_rows"][j]) and key not in retry:
                finished.append(key)
        if finished:
            recs = {s: [{"unit": k, **dict(acc[k])} for k in finished] for s in range(shards)}
            ray.get([w.finish.remote(recs) for w in writers])
            report.units_done += len(finished)
            bar.update(len(finished))
            bar.set_postfix_str(
                f"{report.documents:,} docs, {report.documents / max(time.perf_counter() - t0, 1e-9):,.0f}/s"
            )
    bar.close()
