"""Sequence parallelism (chunk(..., sp_group=...)) over gloo processes under the interpreter, against one process on
the whole sequence, shard by shard: outputs, final state and every gradient (relative error <= 1e-4 in fp32)."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from helpers import ROOT, spec_path

from linattn_gen.check import random_inputs, relative_error

B, T, H, K, V = 1, 96, 2, 16, 32


def _case(name, groups):
    """Inputs with H query/key heads and H * groups value heads (grouped heads when groups > 1). Gates decay slowly
    (about -0.03 per step): at the usual -0.8, the state of one shard has decayed to 1e-17 by the next, and the
    cross-shard terms (the gate gradients through each shard's total decay above all) would go untested."""
    inputs, _ = random_inputs(spec_path(name), B, T, H, K, V, seed=21, gate_scale=0.04)
    gen = torch.Generator().manual_seed(22)
    inputs[2] = torch.randn(B, T, H * groups, V, generator=gen)
    h0 = torch.randn(B, H * groups, K, V, generator=gen)
    do = torch.randn(B, T, H * groups, V, generator=gen)
    dht = torch.randn(B, H * groups, K, V, generator=gen)
    return inputs, h0, do, dht


def _worker(rank, world, name, groups, init_file, out_dir, cache):
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["LINATTN_GEN_CACHE"] = cache
    import torch.distributed as dist

    from linattn_gen import load

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    module = load(ROOT / "specs" / f"{name}.yaml")
    inputs, h0, do, dht = _case(name, groups)
    shard = slice(rank * T // world, (rank + 1) * T // world)
    leaves = [x[:, shard].clone().requires_grad_() for x in inputs]
    h0_leaf = h0.clone().requires_grad_()
    o, final = module.chunk(*leaves, initial_state=h0_leaf, output_final_state=True, sp_group=dist.group.WORLD)
    loss = (o * do[:, shard]).sum()
    if rank == world - 1:
        loss = loss + (final * dht).sum()
    loss.backward()
    torch.save({"o": o.detach(), "final": final.detach(), "grads": [x.grad for x in leaves], "dh0": h0_leaf.grad},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("name,world,groups", [("gla", 2, 1), ("gla", 4, 1), ("retnet", 2, 1), ("linear_attn", 2, 1),
                                               ("mamba2", 2, 1), ("mamba2", 2, 2), ("retnet", 2, 3)])
def test_sequence_parallel_matches_one_process(modules, tmp_path, name, world, groups):
    module = modules[name]
    inputs, h0, do, dht = _case(name, groups)
    leaves = [x.clone().requires_grad_() for x in inputs]
    h0_leaf = h0.clone().requires_grad_()
    o_ref, final_ref = module.chunk(*leaves, initial_state=h0_leaf, output_final_state=True)
    ((o_ref * do).sum() + (final_ref * dht).sum()).backward()

    mp.start_processes(_worker, args=(world, name, groups, str(tmp_path / "init"), str(tmp_path), os.environ["LINATTN_GEN_CACHE"]),
                       nprocs=world, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for rank, res in enumerate(results):
        shard = slice(rank * T // world, (rank + 1) * T // world)
        assert relative_error(res["o"], o_ref[:, shard]) <= 1e-4
        for got, leaf in zip(res["grads"], leaves):
            assert relative_error(got, leaf.grad[:, shard]) <= 1e-4
    assert relative_error(results[-1]["final"], final_ref) <= 1e-4
    # initial_state is passed on every rank; its gradient is the sum of the ranks' shares
    assert relative_error(sum(r["dh0"] for r in results), h0_leaf.grad) <= 1e-4
