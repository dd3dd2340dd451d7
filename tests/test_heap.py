"""Mining actors hand freed heap memory back after each call (glibc's malloc_trim)."""

import psutil
import pyarrow as pa
import pytest

from falconer_ray.mine import heap


def test_trimming_returns_freed_heap_memory_that_glibc_would_keep():
    if not heap.trim_heap():
        pytest.skip("this C library has no malloc_trim (not glibc)")
    me = psutil.Process()
    blobs = [bytes(1500) for _ in range(100_000)]  # ~150 MB of malloc'd blocks, below mmap size
    keep = blobs[::500]  # a survivor every 500 pins the heap: glibc cannot shrink it by itself
    del blobs
    held = me.memory_info().rss
    assert heap.trim_heap()
    assert me.memory_info().rss < held - 50 * 2**20, "the freed pages were not returned"
    assert len(keep) == 200


def test_every_mining_call_trims_the_heap(tmp_path, monkeypatch):
    from falconer_ray.config import RunConfig
    from falconer_ray.mine.actors import ProxyStage
    from falconer_ray.plan.schema import Plan, Step
    from falconer_ray.proxy import ProxyModel

    ProxyModel.from_base("minilm").save(tmp_path / "proxy")
    plan = Plan(instruction="Find praised actors.", steps=[
        Step(id="positive", op="get_label", instruction="Is this review positive?"),
        Step(id="actors", op="get_span", instruction="Extract the praised actors.")], keep="positive")
    stage = ProxyStage(str(tmp_path / "proxy"), plan.model_dump_json(by_alias=True), RunConfig().model_dump_json(), 1)
    trims = []
    monkeypatch.setattr("falconer_ray.mine.actors.trim_heap", lambda: trims.append(1) or True)
    batch = pa.table({"doc_id": ["a", "b"], "text": ["A fine film with Tom Hanks.", "Dull."], "error": [None, None]})
    for n in (1, 2):
        assert stage(batch).num_rows == 2
        assert len(trims) == n  # once per call, after the answers are built
