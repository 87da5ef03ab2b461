"""The pure parts of the sharded router (:mod:`service.router`): the shard list, which shard holds an
id, how the shards' answers merge, and what failed shards make of a call. No I/O and no channels, so
every rule here is tested on its own.

- **Routing** is :func:`zembed.store.sharding.shard_of` (BLAKE2b-64 of the id, modulo the shard count):
  the same rule ``zembed index`` writes shard stores with, so the router finds every document where
  the indexer put it. The shard list's ORDER is part of the data layout: shard i holds the ids with
  ``shard_of(id, n) == i``.
- **Merging** Search answers: every shard returns its own top_k, exactly scored; the union's top_k
  is the top_k of their concatenation, ordered by score descending, then id ascending, then passage
  number ascending (a deterministic tie-break: equal scores never reorder between calls).
- **Failures**: a shard that is down, overloaded or past its deadline (UNAVAILABLE, RESOURCE_EXHAUSTED,
  DEADLINE_EXCEEDED, CANCELLED) is an *availability* failure: the call is UNAVAILABLE naming the shard,
  or, for a Search with ``allow_partial``, left out and listed in the response. Any other code (a bad
  request, an unknown collection) is the caller's or the data's: it is answered with that code.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import grpc

from zembed.service.status import Relayed
from zembed.store.sharding import shards_of
from zembed.v1 import zembed_pb2 as pb

AVAILABILITY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
# The router's own token refused by a shard is a deployment error, not the caller's: never answer the
# caller UNAUTHENTICATED for it.
CONFIGURATION = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
MAX_SHARDS = 1024
TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


class ShardListError(ValueError):
    """The shard list (``--shards`` / ``--shards-file``) is unusable; the message says why."""


def parse_shards(text: str, source: str) -> tuple[str, ...]:
    """Addresses from a comma- or newline-separated list (``#`` starts a comment in a file).

    Each is ``host:port`` (a DNS name resolving to every replica of the shard, e.g. a headless
    Service, or an IP), or a gRPC target with a scheme (``dns:///name:port``; static replicas of one
    shard as ``ipv4:10.0.0.1:50051;10.0.0.2:50051``, see :func:`channel_target`)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in line.split(","):
            addr = part.strip()
            if addr:
                out.append(addr)
    if not out:
        raise ShardListError(f"{source}: no shard address given")
    if len(out) > MAX_SHARDS:
        raise ShardListError(f"{source}: at most {MAX_SHARDS} shards; given {len(out)}")
    seen: dict[str, int] = {}
    for i, addr in enumerate(out):
        if addr in seen:
            raise ShardListError(f"{source}: shard {i} ({addr}) is listed twice (also shard {seen[addr]})")
        seen[addr] = i
        if not addr.startswith(TARGET_SCHEMES) and ":" not in addr.rsplit("]", 1)[-1]:
            raise ShardListError(f"{source}: shard {i} ({addr!r}) must be HOST:PORT or a gRPC target")
    return tuple(out)


def channel_target(address: str) -> str:
    """The gRPC target for a shard address: ``host:port`` becomes ``dns:///host:port`` (every address
    the name resolves to is a replica; the channel's round_robin policy spreads calls over them and
    re-resolves when pods come and go). A target with a scheme is used as written; in it ``;``
    separates static replica addresses (``ipv4:127.0.0.1:5001;127.0.0.1:5002``), since ``,``
    separates shards in the list."""
    if address.startswith(TARGET_SCHEMES):
        return address.replace(";", ",")
    return f"dns:///{address}"


def route(ids: Sequence[str], shards: int) -> dict[int, list[int]]:
    """Positions of ``ids`` per shard (each list in request order; only shards that get any)."""
    out: dict[int, list[int]] = {}
    for pos, shard in enumerate(shards_of(list(ids), shards).tolist()):
        out.setdefault(int(shard), []).append(pos)
    return out


def hit_key(hit: pb.Hit) -> tuple[float, str, int]:
    """Score descending, then id ascending, then passage number ascending."""
    return (-hit.score, hit.id, hit.passage.index if hit.HasField("passage") else -1)


def merge_hits(per_shard: Iterable[Sequence[pb.Hit]], top_k: int) -> list[pb.Hit]:
    """The top_k of every shard's hits (each shard's list is its own exact top_k)."""
    return heapq.nsmallest(top_k, chain.from_iterable(per_shard), key=hit_key)


def shard_timeout(remaining: float | None, default: float) -> float:
    """Seconds a shard call may take: the caller's time left (or ``default`` when the caller set no
    deadline) less a margin (10%, at most 0.25 s), so the router can still answer UNAVAILABLE naming a
    shard that did not answer before the caller's own deadline passes."""
    budget = default if remaining is None else max(0.0, remaining)
    return max(0.001, budget - min(0.1 * budget, 0.25))


@dataclass(frozen=True)
class Failure:
    """One shard's failed call."""

    shard: int
    address: str
    code: grpc.StatusCode
    message: str

    def describe(self) -> str:
        return f"shard {self.shard} ({self.address}): {self.code.name}: {self.message}"

    def to_proto(self) -> pb.ShardFailure:
        return pb.ShardFailure(
            shard=self.shard,
            address=self.address,
            status=pb.Status(code=self.code.value[0], message=self.message),
        )


class ShardError(Relayed):
    """What the router answers a call with when shards failed (a gRPC code and a message)."""


def failure_error(failures: Sequence[Failure], shards: int, *, what: str = "") -> ShardError:
    """The one error for a call some of whose ``shards`` failed (``failures`` non-empty).

    A caller's or data error (any code outside :data:`AVAILABILITY`) wins, first shard first: when
    every shard answered it with the same message, it is passed on as it is (a bad request reads
    exactly as a single server's); else prefixed with the shard. Otherwise UNAVAILABLE listing every
    failed shard. ``what`` adds a sentence (e.g. which shards did write)."""
    tail = f"; {what}" if what else ""
    hard = [f for f in failures if f.code not in AVAILABILITY]
    if hard:
        first = hard[0]
        if first.code in CONFIGURATION:
            return ShardError(
                grpc.StatusCode.INTERNAL,
                f"the router's credentials were refused by {first.describe()} (check --token and the "
                f"shards' tokens){tail}",
            )
        same = len(hard) == shards and all((f.code, f.message) == (first.code, first.message) for f in hard)
        return ShardError(first.code, (first.message if same else first.describe()) + tail)
    listed = "; ".join(f.describe() for f in failures)
    return ShardError(
        grpc.StatusCode.UNAVAILABLE, f"{len(failures)} of {shards} shards unavailable: {listed}{tail}"
    )


def search_failure(failures: Sequence[Failure], shards: int, allow_partial: bool) -> ShardError | None:
    """None when a Search may be answered from the shards that did answer (no failure, or only
    availability failures of some shards with ``allow_partial``); else the error to answer."""
    if not failures:
        return None
    if allow_partial and len(failures) < shards and all(f.code in AVAILABILITY for f in failures):
        return None
    hint = "" if allow_partial else "set allow_partial for the other shards' results"
    return failure_error(failures, shards, what=hint)


def written_note(ok: Iterable[int], failed: Iterable[int]) -> str:
    """Which shards did write (writes are atomic per shard, not across shards)."""
    done = sorted(ok)
    bad = sorted(failed)
    if not done:
        return "nothing was written"
    return (
        f"the documents routed to shard{'s' if len(done) > 1 else ''} {', '.join(map(str, done))} were "
        f"written, those routed to {', '.join(map(str, bad))} were not (retrying the call is safe)"
    )


# ---------------------------------------------------------------------------------- collections
def merge_collections(parts: Sequence[pb.Collection]) -> pb.Collection:
    """One collection's view over its shards: the config and the recall points of the first shard
    (every shard is created with the same config); counts and index bytes summed; calibrated only
    when every shard is; the lowest measured recall (the weakest shard bounds the merged results)."""
    out = pb.Collection()
    out.CopyFrom(parts[0])
    out.count = sum(p.count for p in parts)
    out.index_bytes = sum(p.index_bytes for p in parts)
    out.calibrated_at = sum(p.calibrated_at for p in parts)
    out.calibrated = all(p.calibrated for p in parts)
    out.calibration_final = all(p.calibration_final for p in parts)
    recalls = [p.measured_recall for p in parts if p.HasField("measured_recall")]
    if len(recalls) == len(parts):
        out.measured_recall = min(recalls)
    else:
        out.ClearField("measured_recall")
    return out


def merge_list_pages(
    pages: Sequence[pb.ListCollectionsResponse], page_size: int
) -> tuple[list[pb.Collection], str]:
    """Every shard's page of ListCollections (same page_size and page_token) as one page.

    A name is complete once every shard has listed past it: names up to the smallest last name of
    the shards that have more pages. The page is the first ``page_size`` complete names, each merged
    over the shards holding it; the next token is the last name when more may follow."""
    cutoff: str | None = None
    for page in pages:
        if page.next_page_token and page.collections:
            last = page.collections[-1].name
            cutoff = last if cutoff is None else min(cutoff, last)
    by_name: dict[str, list[pb.Collection]] = {}
    for page in pages:
        for c in page.collections:
            by_name.setdefault(c.name, []).append(c)
    names = sorted(n for n in by_name if cutoff is None or n <= cutoff)
    taken = names[:page_size]
    more = len(names) > len(taken) or cutoff is not None
    merged = [merge_collections(by_name[n]) for n in taken]
    return merged, (taken[-1] if more and taken else "")


# ---------------------------------------------------------------------------------- replicas
def replica_hosts(address: str) -> tuple[str, int] | list[str]:
    """How to find every replica of a shard (writes and admin calls go to each of them): ``(host,
    port)`` to resolve for a DNS name (``host:port`` or ``dns:[//authority]/host:port``), or the
    static list of replica targets (``ipv4:a:p;b:p``, ``ipv6:...``, a ``unix:`` path is one)."""
    if address.startswith(("ipv4:", "ipv6:")):
        return [a.strip() for a in address.split(":", 1)[1].replace(";", ",").split(",") if a.strip()]
    if address.startswith(("unix:", "unix-abstract:", "vsock:")):
        return [address]
    name = address
    if name.startswith("dns:"):
        name = name[len("dns:") :]
        if name.startswith("//"):
            name = name[2:].split("/", 1)[1] if "/" in name[2:] else ""
        name = name.lstrip("/")
    host, _, port = name.rpartition(":")
    if not host or not port.isdigit():
        raise ShardListError(f"shard address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def ip_target(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
