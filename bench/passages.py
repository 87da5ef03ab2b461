"""Real text passages available offline: docstring paragraphs of the standard library and of the
installed packages (read with ``ast``, nothing imported), deduplicated, in a seeded order."""

from __future__ import annotations

import ast
import random
import sys
import sysconfig
from pathlib import Path


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                out.append(doc)
    return out


def passages(limit: int, *, seed: int = 0, min_chars: int = 80, max_chars: int = 1200) -> list[str]:
    """At least ``limit`` distinct paragraphs (or all there are), shuffled with ``seed``."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen: set[str] = set()
    found: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "test" in path.parts or "tests" in path.parts:
                continue
            for doc in _docstrings(path):
                for para in doc.split("\n\n"):
                    text = " ".join(para.split())
                    if min_chars <= len(text) <= max_chars and text not in seen and "    " not in para:
                        seen.add(text)
                        found.append(text)
    random.Random(seed).shuffle(found)
    return found[:limit]


if __name__ == "__main__":
    ps = passages(int(sys.argv[1]) if len(sys.argv) > 1 else 40_000)
    print(len(ps))
    for p in ps[:5]:
        print("-", p[:150])
