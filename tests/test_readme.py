"""The README works as written: its code blocks are extracted and run in order, against `make serve`
started as the README says (the packaged MiniLM export, here on a free port with a temporary data
folder, found through ZEMBED_ADDRESS as the README's commands and client read it).

Each fenced block is preceded by a marker: ``<!-- readme-test: run [server] [checkpoint]
[expect=/REGEX/] -->`` (run it: ``bash`` blocks with ``bash -e -o pipefail``, ``python`` blocks with
the project's Python, all in one folder so later blocks see earlier blocks' files; ``server``: needs
the running server; ``checkpoint``: needs CHECKPOINT, a multilingual checkpoint folder, here a tiny
random-weight XLM-R one with the real XLM-R tokenizer; ``expect``: its output must match) or
``<!-- readme-test: skip (why) -->``. Every block of the walk-through must be run; every other block
must say which it is. The configuration table and the command table are checked against
``zembed serve --help`` and ``zembed --help``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaged_model import ROOT, packaged_minilm
from zembed.service.client import Client
from zembed.service.config import add_arguments

README = ROOT / "README.md"
WALK_THROUGH = "Five-minute walk-through"
MARKER = re.compile(r"<!-- readme-test: (?P<spec>.*?) -->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)
SECOND_SERVER_PORT = 50052  # the walk-through's multilingual server


@dataclass
class Block:
    line: int
    section: str
    lang: str
    body: str
    spec: str | None

    @property
    def run(self) -> bool:
        return self.spec is not None and self.spec.split()[0] == "run"

    def has(self, word: str) -> bool:
        return self.spec is not None and word in self.spec.split()[1:]

    @property
    def expect(self) -> re.Pattern[str] | None:
        m = re.search(r"expect=/(.*)/", self.spec or "")
        return re.compile(m.group(1), re.M) if m else None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section}, {self.lang})"


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()]
        headings = re.findall(r"^## (.*)$", before, re.M)
        prev = before.rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(prev.strip())
        out.append(
            Block(
                line=before.count("\n") + 1,
                section=headings[-1] if headings else "",
                lang=m.group("lang"),
                body=m.group("body").removesuffix("\n"),
                spec=marker.group("spec") if marker else None,
            )
        )
    return out


def test_every_block_is_marked_and_the_walk_through_runs_entirely() -> None:
    found = blocks()
    walk = [b for b in found if b.section == WALK_THROUGH]
    assert len(walk) >= 4
    assert [str(b) for b in walk if not b.run] == []
    unmarked = [str(b) for b in found if b.spec is None]
    assert unmarked == [], "mark each block `<!-- readme-test: run ... -->` or `skip (why)`"
    for b in found:
        assert b.spec is not None
        assert b.run or re.fullmatch(r"skip \(.+\)", b.spec), f"{b}: {b.spec!r}"
        assert not b.run or b.lang in ("bash", "python"), f"{b}: cannot run {b.lang!r}"


def test_the_marker_parser_sees_what_it_should() -> None:
    text = (
        "## A\n\n<!-- readme-test: run server expect=/^x$/ -->\n```bash\necho x\n```\n\n"
        "```python\npass\n```\n"
    )
    first, second = blocks(text)
    assert first.run and first.has("server") and not first.has("checkpoint") and first.body == "echo x"
    assert first.expect is not None and first.expect.search("y\nx\n") and first.section == "A"
    assert second.spec is None and second.line == 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Session:
    """Processes started in their own process groups, all ended at the end."""

    def __init__(self) -> None:
        self.groups: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], **kw: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, start_new_session=True, text=True, **kw)  # type: ignore[call-overload]
        self.groups.append(proc)
        return proc  # type: ignore[no-any-return]

    def close(self) -> None:
        for proc in self.groups:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(20)
                    break
                except subprocess.TimeoutExpired:
                    continue


@pytest.fixture
def session() -> Iterator[Session]:
    s = Session()
    try:
        yield s
    finally:
        s.close()


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user in a fresh shell: the project's virtualenv not yet activated."""
    venv = str(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv))
    return {**env, **extra}


def tiny_multilingual_checkpoint(tmp: Path) -> Path:
    pytest.importorskip("torch", reason="the walk-through's export needs the export extra (torch)")
    from zembed.export.synthetic import build_xlmr_like

    return build_xlmr_like(tmp / "xlmr-checkpoint")


@pytest.mark.slow
def test_readme_blocks_run_as_written(tmp_path: Path, session: Session) -> None:
    model = packaged_minilm()
    assert model.exists()
    runnable = [b for b in blocks() if b.run]
    port = free_port()
    env = user_env(ZEMBED_ADDRESS=f"127.0.0.1:{port}")
    if any(b.has("checkpoint") for b in runnable):
        if port_taken(SECOND_SERVER_PORT):
            pytest.fail(f"the walk-through's second server needs port {SECOND_SERVER_PORT}, which is taken")
        env["CHECKPOINT"] = str(tiny_multilingual_checkpoint(tmp_path))
    # `make serve`, as the README says; a temporary data folder and a free port through its variables
    # (-o: never rebuild the virtualenv from inside a test)
    serve_log = (tmp_path / "serve.log").open("w")
    server = session.start(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "serve"],
        cwd=ROOT,
        env=user_env(ZEMBED_DATA=str(tmp_path / "data"), ZEMBED_PORT=str(port)),
        stdout=serve_log,
        stderr=subprocess.STDOUT,
    )
    serve_log.close()  # the server writes through its own descriptor
    with Client(f"127.0.0.1:{port}", timeout=5) as c:
        deadline = time.monotonic() + 300
        while True:
            try:
                if c.health() == "SERVING":
                    break
            except Exception:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make serve was not SERVING within 300 s"
            time.sleep(0.5)
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")  # the blocks run "at the repository root"
    for i, b in enumerate(runnable):
        if b.lang == "bash":
            args = ["bash", "-e", "-o", "pipefail", "-c", b.body]
        else:
            script = work / f"readme_block_{i}.py"
            script.write_text(b.body + "\n")
            args = [str(ROOT / ".venv" / "bin" / "python"), script.name]
        proc = session.start(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{b} did not finish within 900 s")
        assert proc.returncode == 0, (
            f"{b} failed ({proc.returncode}):\n{b.body}\n--- stdout\n{out}\n--- stderr\n{err}"
        )
        if b.expect is not None:
            assert b.expect.search(out), f"{b}: output does not match {b.expect.pattern!r}:\n{out}"
    with Client(f"127.0.0.1:{port}") as c:
        articles = c.get_collection("articles")
        assert articles.count == 6 and articles.filterable == ["lang", "topic"]
        assert [d.found for d in c.get_documents("docs", ["d1", "d2"])] == [True, True]
    os.killpg(server.pid, signal.SIGINT)  # Ctrl-C in make serve's terminal: the server drains and stops
    server.wait(60)
    log = (tmp_path / "serve.log").read_text()
    assert '"draining (grace' in log and log.rstrip().endswith('"msg": "stopped"}'), log[-3000:]


def serve_help_rows() -> list[tuple[str, str, str]]:
    p = argparse.ArgumentParser()
    add_arguments(p)
    rows = []
    for a in p._actions:
        if not a.option_strings or a.option_strings[0] == "-h":
            continue
        m = re.fullmatch(r"(.*) \[(ZEMBED_\w+); (.*)\]", a.help or "", re.S)
        assert m is not None, a.help
        rows.append((a.option_strings[0], m.group(2), m.group(3).removeprefix("default: ")))
    return rows


def test_configuration_table_agrees_with_serve_help() -> None:
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `(--[\w-]+)` \| `(ZEMBED_\w+)` \| ([^|]+?) \|", section, re.M)
    }
    want = {flag: (env, default) for flag, env, default in serve_help_rows()}
    missing = sorted(set(want) - set(table))
    assert not missing, f"README's configuration table lacks {missing} (zembed serve --help lists them)"
    assert sorted(set(table) - set(want)) == [], "README lists flags zembed serve does not have"
    wrong = {f: (table[f], want[f]) for f in want if table[f] != want[f]}
    assert not wrong, f"README (env, default) vs zembed serve --help: {wrong}"


def test_command_table_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zembed.service.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"\{([\w,-]+)\}", out)
    assert m is not None, out
    section = README.read_text().split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `zembed ([\w-]+)", section, re.M))
    assert sorted(set(m.group(1).split(",")) - listed) == [], "add the command to README's command table"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_inside_the_readme_resolve() -> None:
    text = README.read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.*)$", text, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert {"python-client", "configuration", "deployment"} <= links
    assert sorted(links - anchors) == []
