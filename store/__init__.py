"""zembed-serve's vector store: binary codes in memory for a popcount Hamming scan, float vectors in
LMDB for rescoring the shortlist, plus ids and metadata. No gRPC and no model code in here.

Public surface::

    from zembed.store import Store, CollectionConfig, RescoreDtype, Calibration
    with Store("/data") as s:
        s.create_collection("docs", CollectionConfig(code_bits=640, rescore_dims=2560))
        c = s.collection("docs")
        c.upsert(ids, code_vectors, rescore_vectors, metadata)
        hits = c.search(code_query, rescore_query, top_k=10, filter={"lang": {"$in": ["de", "fr"]}})
"""

from zembed.store.collection import Collection, SearchArrays, Shortlist
from zembed.store.config import Calibration, CollectionConfig
from zembed.store.errors import (
    AlreadyExists,
    FormatMismatch,
    InvalidArgument,
    NotFound,
    StoreError,
    WouldBlock,
)
from zembed.store.quantize import RescoreDtype
from zembed.store.records import CollectionInfo, Hit, Record
from zembed.store.store import Store

__all__ = [
    "AlreadyExists",
    "Calibration",
    "Collection",
    "CollectionConfig",
    "CollectionInfo",
    "FormatMismatch",
    "Hit",
    "InvalidArgument",
    "NotFound",
    "Record",
    "RescoreDtype",
    "SearchArrays",
    "Shortlist",
    "Store",
    "StoreError",
    "WouldBlock",
]
