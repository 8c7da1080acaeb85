"""Scale-out: one store built by many processes or machines from a deterministic task split.

split.py       the files cut into units (whole files, line-aligned byte ranges, row groups)
unit.py        one unit read, encoded and packed, its shards written into the store
ray_engine.py  units as Ray tasks, bounded in flight, retried by Ray
build.py       plan, run on an engine (local or ray), commit one store or one node's part
commit.py      shards in unit order, leftovers joined, one index and metadata
merge.py       the parts of a multi-node build joined by hard links
"""

from .build import DEFAULT_SPLIT_BYTES, ENGINES, pack_split
from .merge import merge_parts
from .split import Unit, plan_split

__all__ = ["DEFAULT_SPLIT_BYTES", "ENGINES", "Unit", "merge_parts", "pack_split", "plan_split"]
