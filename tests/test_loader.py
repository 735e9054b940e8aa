"""`load()`: one import per spec content, a new cache entry for an edited spec, and safe concurrent first loads."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import torch
from helpers import spec_path

from linattn_gen import load
from linattn_gen.check import check_op
from linattn_gen.loader import cache_root


def test_load_twice_returns_the_same_module():
    first = load(spec_path("retnet"))
    assert load(spec_path("retnet")) is first
    assert Path(first.__file__).is_relative_to(cache_root())
    assert first.SPEC_NAME == "retnet" and first.CHUNK_SIZE == 64


def test_edited_spec_gets_its_own_cache_entry(tmp_path):
    original = load(spec_path("linear_attn"))
    copy = tmp_path / "linear_attn.yaml"
    text = spec_path("linear_attn").read_text()
    copy.write_text(text)
    assert load(copy) is original  # the cache is keyed by content, not by path

    copy.write_text(text.replace("chunk_size: 64", "chunk_size: 32"))
    edited = load(copy)
    assert edited is not original
    assert Path(edited.__file__).parent != Path(original.__file__).parent
    assert edited.SPEC_SHA256 != original.SPEC_SHA256
    assert edited.CHUNK_SIZE == 32 and original.CHUNK_SIZE == 64
    result = check_op(edited, copy, 1, 70, 1, 16, 32, dtype=torch.float32, seed=0)
    assert result.max_error <= 1e-3, result.errors


def _load_in_fresh_process(spec: str, cache: str, barrier, results) -> None:
    """Runs in a spawned process: wait for the sibling, then compile and import the spec and run it once."""
    os.environ["LINATTN_GEN_CACHE"] = cache
    from linattn_gen import load as load_in_child

    barrier.wait(timeout=120)
    module = load_in_child(spec)
    q, k, v = torch.randn(1, 5, 1, 16), torch.randn(1, 5, 1, 16), torch.randn(1, 5, 1, 16)
    o, _ = module.chunk(q, k, v)
    results.put((str(Path(module.__file__).parent), bool(torch.isfinite(o).all())))


def test_concurrent_first_loads(tmp_path):
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_load_in_fresh_process, args=(str(spec_path("linear_attn")), str(cache), barrier,
                                                                  results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]
    (dir_a, ok_a), (dir_b, ok_b) = results.get(timeout=10), results.get(timeout=10)
    assert dir_a == dir_b and ok_a and ok_b
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1, f"the cache should hold one package and no staging folders: {entries}"
    assert sorted(p.name for p in (cache / entries[0] / "linear_attn").glob("*.py")) == [
        "__init__.py", "kernels.py", "layer.py", "ops.py"]
