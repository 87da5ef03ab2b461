"""A deterministic fake embedder and a real gRPC server around it, for service-logic tests that need
no torch and no exported graph: inference can be made slow, held, or failing on demand.

Everything else is real: the gRPC server on a loopback port, the edge, the batcher, the engine and an
LMDB store in a temp dir.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.service.config import Settings
from zembed.service.runtime.manifest import Manifest
from zembed.service.runtime.text import Overflow, TooLong
from zembed.service.server import Running, start
from zembed.store import Store

F32 = npt.NDArray[np.float32]


def fake_manifest(hidden: int = 64, max_length: int = 128) -> Manifest:
    return Manifest(
        model_id="fake/embedder",
        revision=None,
        architecture="Fake",
        pooling="mean",
        normalize=True,
        prompts={"query": "q: ", "document": "d: "},
        default_prompt=None,
        suffix="",
        hidden_size=hidden,
        dims=[hidden, hidden // 2, hidden // 4],
        max_length=max_length,
        dtype="float32",
        opset=0,
        graph="none",
        inputs=[],
        outputs=[],
        projections=None,
        files={},
        source_files={},
        tools={},
    )


class FakeTokenizer:
    """One token per 4 UTF-8 bytes of prompt + text, between a start and an end token."""

    def __init__(self, manifest: Manifest) -> None:
        self.m = manifest
        self.calls = 0  # encode/count calls (admission must come before these)
        self.threads: set[str] = set()  # threads that tokenized

    def _ids(self, text: str, input_type: str | None) -> list[int]:
        data = (self.m.prompts.get(input_type or "", "") + text).encode("utf-8")
        body = [zlib.crc32(data[i : i + 4]) % 30000 + 3 for i in range(0, len(data), 4)]
        return [1, *body, 2]

    def encode_counted(
        self, texts: Sequence[str], input_type: str | None, overflow: Overflow = Overflow.TRUNCATE
    ) -> tuple[list[list[int]], list[int]]:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        out, full = [], []
        for i, t in enumerate(texts):
            ids = self._ids(t, input_type)
            full.append(len(ids))
            if len(ids) > self.m.max_length:
                if overflow is Overflow.STRICT:
                    raise TooLong(i, len(ids), self.m.max_length)
                ids = [*ids[: self.m.max_length - 1], 2]
            out.append(ids)
        return out, full

    def count(self, texts: Sequence[str], input_type: str | None) -> list[int]:
        self.calls += 1
        return [len(self._ids(t, input_type)) for t in texts]


@dataclass
class FakeEmbedder:
    """Deterministic unit vectors from token ids. ``delay_per_token_s`` makes inference slow in
    proportion to padded tokens; ``hold`` (an Event) blocks each batch until set; ``fail`` makes
    every batch raise it. ``seen`` records every row computed (its token ids)."""

    hidden: int = 64
    max_length: int = 128
    delay_per_token_s: float = 0.0
    fail: BaseException | None = None
    provider: str = "FakeExecutionProvider"
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    seen: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.manifest = fake_manifest(self.hidden, self.max_length)
        self._text = FakeTokenizer(self.manifest)

    @property
    def text(self) -> FakeTokenizer:
        return self._text

    @property
    def dims(self) -> list[int]:
        return list(self.manifest.dims)

    def vector(self, ids: Sequence[int]) -> F32:
        rng = np.random.default_rng(zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes()))
        v = rng.standard_normal(self.hidden).astype(np.float32)
        out: F32 = v / np.linalg.norm(v)
        return out

    def run(self, ids: Sequence[Sequence[int]]) -> F32:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(30)
        if self.fail is not None:
            raise self.fail
        if self.delay_per_token_s:
            time.sleep(self.delay_per_token_s * len(ids) * max(len(x) for x in ids))
        self.seen.extend(tuple(x) for x in ids)
        return np.stack([self.vector(x) for x in ids])

    def project(self, emb: F32, dim: int) -> F32:
        y = emb[:, :dim]
        out: F32 = y / np.linalg.norm(y, axis=1, keepdims=True)
        return out

    def embed(self, texts: Sequence[str], input_type: str | None = None, dim: int | None = None) -> F32:
        ids, _ = self.text.encode_counted(texts, input_type)
        return self.project(np.stack([self.vector(x) for x in ids]), dim or self.hidden)

    def warmup(self) -> None:
        pass


def model_dir(path: Path) -> Path:
    """A folder that passes Settings' check (it has a manifest.json); the fake is injected instead."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(fake_manifest().to_json())
    return path


class ServerThread:
    """The real server (``service.server.start``) on a loopback port, in its own thread and event
    loop; ``model`` / ``store`` are injected when given (else loaded from the settings)."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: Any = None,
        store: Store | None = None,
        timeout: float = 180,
    ) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: Running = asyncio.run_coroutine_threadsafe(
            start(settings, model=model, store=store), self.loop
        ).result(timeout)
        self.port = self.running.port
        self.target = f"127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 2.0) -> None:
        self.call(self.running.drain(grace), 60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()  # else its self-pipe sockets are reported unclosed at a later GC

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeServer(ServerThread):
    """The real server (edge, servicers, batcher, engine, LMDB) around a :class:`FakeEmbedder`, on a
    loopback port, in its own thread and event loop."""

    def __init__(
        self, tmp: Path, model: FakeEmbedder | None = None, store: Store | None = None, **settings: Any
    ) -> None:
        self.model = model or FakeEmbedder()
        super().__init__(
            Settings(
                model=model_dir(tmp / "model"), data=tmp / "data", host="127.0.0.1", port=0, **settings
            ).validate(),
            model=self.model,
            store=store,
            timeout=60,
        )
        self.model.entered.clear()  # the start-up calibration batch ran through the model
        self.model.seen.clear()

    def stop(self, grace: float = 1.0) -> None:
        super().stop(grace)

    def __enter__(self) -> FakeServer:
        return self
