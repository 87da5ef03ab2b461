"""One frozen settings object, built once from flags and ``ZEMBED_*`` environment variables.

Every flag ``--some-flag`` can also be set as ``ZEMBED_SOME_FLAG``; a flag beats the environment.
Cross-field rules are checked in :meth:`Settings.validate` before anything starts.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from zembed.store.validate import MAX_TOP_K

MIN_TOKEN_CHARS = 16  # --token: shorter bearer tokens are refused at start-up


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag and its environment variable."""


@dataclass(frozen=True)
class Settings:
    model: Path
    data: Path
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 0  # 0 disables the HTTP metrics endpoint
    http_port: int = -1  # HTTP/JSON API (hosted-API paths, OpenAI embeddings); -1 off, 0 a free port
    metrics_host: str = "127.0.0.1"  # /metrics listens here; with a token set it also requires it
    token: str | None = None  # bearer token; None disables auth
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set for mutual TLS
    providers: tuple[str, ...] = ()  # empty: TensorRT, CUDA, CPU as available
    max_batch: int = 64  # items per inference batch
    max_batch_tokens: int = 16384  # padded tokens per inference batch (rows x longest)
    max_wait_ms: float = 2.0  # how long a batch waits to fill up
    max_pad_ratio: float = 1.5  # a sub-batch's longest input is at most this x its shortest
    queue_items: int = 1024  # items waiting for inference; unary calls beyond get RESOURCE_EXHAUSTED
    max_queue_s: float = 2.0  # estimated seconds of queued inference work; unary calls beyond refused
    stream_idle_s: float = 300.0  # a stream with no message this long and nothing pending is ended
    stream_in_flight: int = 64  # items per stream being processed at once
    max_inputs: int = 256  # inputs per Embed call
    max_chars: int = 32768  # characters per input
    max_top_k: int = MAX_TOP_K  # the store's ceiling; the flag may only lower it
    inline_search_rows: int = 2_000_000  # idle-server fast path up to this size (service.searcher)
    search_batch: int = 64  # queued searches of one shape run together, up to this many; 1: never
    max_message_mb: int = 64
    default_collection: str = ""  # created at start with model-aware defaults when set
    default_filterable: tuple[str, ...] = ()  # filterable fields of the default collection
    remeasure_growth: float = 2.0  # re-measure a final collection's recall table each time it doubles
    prefetch: bool = False  # touch every stored vector at start (see Collection.prefetch)
    grace_s: float = 10.0  # SIGTERM: time in-flight calls get to finish
    drain_delay_s: float = 1.0  # SIGTERM: NOT_SERVING this long before refusing new calls
    intra_op_threads: int = 0  # onnxruntime threads; 0 lets it choose
    accept_parity_failure: bool = False  # serve an export whose manifest records a failed parity check
    log_level: str = "INFO"
    # the sharded router role (service.router): shard addresses, in shard order; no store of its own
    shards: tuple[str, ...] = ()
    shards_file: Path | None = None
    shard_timeout_s: float = 30.0  # a shard call's limit when the caller set no deadline
    shard_tls_ca: Path | None = None  # PEM CA bundle: call the shards over TLS

    def validate(self) -> Settings:
        if not (self.model / "manifest.json").is_file():
            raise ConfigError(
                f"--model / ZEMBED_MODEL: {self.model} has no manifest.json; create one with "
                f"`zembed export SOURCE --out {self.model}`"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key (ZEMBED_TLS_CERT / ZEMBED_TLS_KEY) go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            p = getattr(self, name)
            if p is not None and not p.is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: {p} is not a file")
        for name, lo in (
            ("max_batch", 1),
            ("max_batch_tokens", 1),
            ("queue_items", 1),
            ("stream_in_flight", 1),
            ("max_inputs", 1),
            ("max_chars", 1),
            ("max_top_k", 1),
            ("max_message_mb", 1),
            ("inline_search_rows", 0),
            ("search_batch", 1),
            ("max_queue_s", 0),
            ("stream_idle_s", 0),
            ("http_port", -1),
            ("remeasure_growth", 0),
        ):
            if getattr(self, name) < lo:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= {lo}; given {getattr(self, name)}")
        if self.max_top_k > MAX_TOP_K:
            raise ConfigError(f"--max-top-k must be <= {MAX_TOP_K} (the store's); given {self.max_top_k}")
        if self.queue_items < self.max_inputs:
            raise ConfigError(
                f"--queue-items ({self.queue_items}) must be >= --max-inputs ({self.max_inputs}): "
                "a full-size call could never be queued"
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"--token / ZEMBED_TOKEN must be at least {MIN_TOKEN_CHARS} characters")
        if self.shards or self.shards_file is not None:
            self.shard_addresses()  # the list parses
            if self.http_port >= 0 or self.default_collection:
                raise ConfigError("--http-port and --default-collection are not for a router (--shards)")
            if self.shard_timeout_s <= 0:
                raise ConfigError(f"--shard-timeout-s must be > 0; given {self.shard_timeout_s}")
            if self.shard_tls_ca is not None and not self.shard_tls_ca.is_file():
                raise ConfigError(f"--shard-tls-ca: {self.shard_tls_ca} is not a file")
        return self

    def shard_addresses(self) -> tuple[str, ...]:
        """The router's shards (--shards, or --shards-file read now); empty: not a router."""
        from zembed.service.fanout import ShardListError, parse_shards

        if self.shards and self.shards_file is not None:
            raise ConfigError("--shards and --shards-file (ZEMBED_SHARDS / ZEMBED_SHARDS_FILE): give one")
        try:
            if self.shards_file is not None:
                try:
                    text = self.shards_file.read_text()
                except OSError as exc:
                    raise ConfigError(f"--shards-file: cannot read {self.shards_file}: {exc}") from None
                return parse_shards(text, f"--shards-file {self.shards_file}")
            return parse_shards(",".join(self.shards), "--shards") if self.shards else ()
        except ShardListError as exc:
            raise ConfigError(str(exc)) from None

    def redacted(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["token"]:
            out["token"] = "***"
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


_HELP = {
    "model": "export folder to serve (zembed export ... --out DIR)",
    "data": "data directory of the LMDB store (created if missing; not used with --shards)",
    "host": "address to listen on (0.0.0.0 inside a container)",
    "port": "gRPC port (0 picks a free one and logs it)",
    "metrics_port": "HTTP port for Prometheus /metrics (0 disables)",
    "http_port": "HTTP/JSON API port on --host (the hosted zembed API's paths and OpenAI /v1/embeddings; "
    "same auth, limits and metrics as gRPC); -1 disables, 0 picks a free one",
    "metrics_host": "address /metrics listens on (default localhost only; 0.0.0.0 to let Prometheus "
    "scrape it, and then set --token: /metrics requires `Authorization: Bearer TOKEN` whenever a "
    "token is set)",
    "token": f"require `authorization: Bearer TOKEN` (at least {MIN_TOKEN_CHARS} characters) on every "
    "call except health and reflection",
    "tls_cert": "PEM certificate chain (enables TLS)",
    "tls_key": "PEM private key",
    "tls_client_ca": "PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
    "providers": "comma-separated onnxruntime execution providers, in order of preference",
    "max_batch": "max inputs per inference batch",
    "max_batch_tokens": "max padded tokens (rows x longest) per inference batch",
    "max_wait_ms": "max milliseconds a batch waits to fill",
    "max_pad_ratio": "split batches so the longest input is at most this x the shortest (raise on GPUs)",
    "queue_items": "max inputs waiting for inference; unary calls beyond get RESOURCE_EXHAUSTED",
    "max_queue_s": "max estimated seconds of queued inference work (tokens waiting / measured "
    "tokens per second); unary calls beyond get RESOURCE_EXHAUSTED at once, streams wait",
    "stream_idle_s": "end a stream (DEADLINE_EXCEEDED) that sent no message for this many seconds "
    "while none of its items was pending",
    "stream_in_flight": "max items being processed per stream",
    "max_inputs": "max inputs per Embed call",
    "max_chars": "max characters per input",
    "max_top_k": "max top_k per search",
    "inline_search_rows": "an idle server runs searches of collections up to this many documents on "
    "its event loop, skipping a thread hand-off (0: always on a worker thread)",
    "search_batch": "under load, searches of the same shape queued behind running ones run as one "
    "batched search of up to this many queries (1: no queueing, every search runs alone)",
    "max_message_mb": "max gRPC message size in MiB",
    "default_collection": "create this collection at start with model-aware defaults",
    "default_filterable": "comma-separated metadata fields the default collection can filter on "
    "(added to an existing one, its stored documents indexed; e.g. lang,tags)",
    "remeasure_growth": "measure a collection's recall table again (what recall_target and GetCollection "
    "use) in the background each time it grows this many times past the size it was measured at, "
    "once its calibration is final (0: never; Calibrate with measure_only does it on request)",
    "prefetch": "touch every stored vector at start so first searches skip page faults",
    "grace_s": "seconds in-flight calls get to finish after SIGTERM",
    "drain_delay_s": "seconds health reports NOT_SERVING after SIGTERM before new calls are refused",
    "intra_op_threads": "onnxruntime intra-op threads (0: its default)",
    "accept_parity_failure": "serve an export whose manifest.json records a failed parity check "
    "(it does not embed like its checkpoint; refused otherwise)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "shards": "serve as a sharded router: comma-separated shard addresses in shard order (HOST:PORT, "
    "a DNS name of the shard's replicas, balanced round-robin); queries are embedded here, searches "
    "fan out to every shard, writes go to shard_of(id); no --data",
    "shards_file": "a file listing the router's shard addresses (one per line, # comments)",
    "shard_timeout_s": "router: seconds a shard call may take when the caller set no deadline",
    "shard_tls_ca": "router: PEM CA bundle to call the shards over TLS (plaintext when unset)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = "ZEMBED_" + f.name.upper()
        default = f.default if f.default is not MISSING else None
        value: Any = default  # shown plainly, never as a Python repr (None, (), False)
        if isinstance(default, tuple):
            value = ",".join(map(str, default)) or "none"
        elif isinstance(default, bool | str | None):
            value = {None: "none", False: "off", True: "on", "": "none"}.get(default, default)
        shown = "required" if f.name in ("model", "data") else f"default: {value}"
        help_text = f"{_HELP[f.name]} [{env}; {shown}]"
        if f.type in ("bool",):
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            p.add_argument(flag, default=None, help=help_text)


def from_args(ns: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(ns, f.name, None)
        if raw is None:
            raw = env.get("ZEMBED_" + f.name.upper())
        if raw is None:
            continue
        values[f.name] = _convert(f.name, str(f.type), raw)
    if values.get("shards") or values.get("shards_file"):
        values.setdefault("data", Path(""))  # a router has no store: --data is not used
    for required in ("model", "data"):
        if required not in values:
            raise ConfigError(f"--{required} (or ZEMBED_{required.upper()}) is required")
    return Settings(**values).validate()


def _convert(name: str, type_name: str, raw: Any) -> Any:
    flag = f"--{name.replace('_', '-')} / ZEMBED_{name.upper()}"
    try:
        if isinstance(raw, bool):
            return raw
        if type_name == "bool":
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if "Path" in type_name:
            return Path(raw)
        if "tuple" in type_name:
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        if "str | None" in type_name:
            return str(raw) or None
        return str(raw)
    except ValueError:
        raise ConfigError(f"{flag}: cannot parse {raw!r} as {type_name}") from None
