"""``zembed index``: bulk indexing on Ray (see README.md beside this file).

Needs the ``ray`` extra (``pip install 'zembed-serve[ray]'``); the server never imports this package.
"""

from zembed.indexer.job import IndexOptions, index, summary_line
from zembed.indexer.pipeline import Report

__all__ = ["IndexOptions", "Report", "index", "summary_line"]
