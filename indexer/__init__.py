"""``zembed index``: bulk indexing on Ray (see README.md beside this file).

Needs the ``ray`` extra (``pip install 'zembed-serve[ray]'``); the server never imports this package.
Names are loaded on first use, so ``zembed --help`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zembed.indexer.job import IndexOptions, index, summary_line
    from zembed.indexer.pipeline import Report

__all__ = ["IndexOptions", "Report", "index", "summary_line"]


def __getattr__(name: str) -> Any:
    if name in ("IndexOptions", "index", "summary_line"):
        from zembed.indexer import job

        return getattr(job, name)
    if name == "Report":
        from zembed.indexer.pipeline import Report

        return Report
    raise AttributeError(name)
