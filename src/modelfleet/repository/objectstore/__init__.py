"""A model repository in S3-compatible object storage, mirrored model by model into a local cache:
locations and keys (keys.py), the storage client (storage.py), the cache's index and eviction
(cache.py), and the repository that mirrors (mirror.py)."""

from modelfleet.config import ObjectStoreOptions, check_endpoint_url
from modelfleet.repository.objectstore.cache import (
    INDEX,
    CachedModel,
    CacheIndex,
    EvictionPlan,
    IndexEntry,
    plan_eviction,
    read_index,
    write_index,
)
from modelfleet.repository.objectstore.keys import (
    ModelPlan,
    RemoteFile,
    key_parts,
    parse_location,
    plan_model_files,
)
from modelfleet.repository.objectstore.mirror import ObjectStoreRepository
from modelfleet.repository.objectstore.storage import Download, Storage

__all__ = [
    "INDEX",
    "CacheIndex",
    "CachedModel",
    "Download",
    "EvictionPlan",
    "IndexEntry",
    "ModelPlan",
    "ObjectStoreOptions",
    "ObjectStoreRepository",
    "RemoteFile",
    "Storage",
    "check_endpoint_url",
    "key_parts",
    "parse_location",
    "plan_eviction",
    "plan_model_files",
    "read_index",
    "write_index",
]
