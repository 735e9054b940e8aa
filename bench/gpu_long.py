"""A million tokens in one sequence: GLA chunk forward + backward at B=1, T=2^20, H=16, K=V=128, bf16, on one GPU.

There q, k, v, g and o hold 2^31 elements each and the per-chunk states 2^32, past what int32 offsets reach. The
check: the last TAIL tokens of the full run (outputs, final state, every gradient of those tokens) must equal a
separate run over just those tokens, entered with the state that a forward run over the prefix leaves. The prefix
and tail runs are each far below 2^31 elements per tensor, so an index that wraps in the full run shows up as a
mismatch. Reports time and peak memory against the bytes the inputs themselves need.

usage: python bench/gpu_long.py [--tokens N] [--tail N] [--out DIR]; writes DIR/long-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linattn_gen import load
from linattn_gen.bench import environment

H, K, V = 16, 128, 128
GiB = 2**30


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def empty_cache():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2**20)
    parser.add_argument("--tail", type=int, default=8192, help="tokens compared with a separate run (multiple of 64)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    T, tail = args.tokens, args.tail
    gla = load(Path(__file__).resolve().parents[1] / "specs" / "gla.yaml")
    # on the CPU (TRITON_INTERPRET=1, tiny --tokens): a smoke run of this script, fp32 since the interpreter's bf16 is off
    device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

    q, k, v = randn(1, T, H, K), randn(1, T, H, K), randn(1, T, H, V)
    g = torch.nn.functional.logsigmoid(randn(1, T, H, K).float() + 4).to(dtype)  # mostly slow decay
    do, dht = randn(1, T, H, V), torch.randn(1, H, K, V, device=device, generator=gen)
    input_bytes = sum(x.numel() * x.element_size() for x in (q, k, v, g))
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if device == "cuda" else 0

    leaves = [x.requires_grad_() for x in (q, k, v, g)]
    started = time.perf_counter()
    o, ht = gla.chunk(*leaves, output_final_state=True)
    sync()
    forward_s = time.perf_counter() - started
    torch.autograd.backward([o, ht], [do, dht])
    sync()
    total_s = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    print(f"T={T}: forward {forward_s * 1e3:.1f} ms, forward+backward {total_s * 1e3:.1f} ms (first call, compile "
          f"included), peak {peak / GiB:.1f} GiB (inputs {input_bytes / GiB:.1f} GiB)", flush=True)
    full = {"o": o[:, -tail:].detach().clone(), "final_state": ht.detach().clone()}
    full.update({f"d{name}": x.grad[:, -tail:].clone() for name, x in zip("qkvg", leaves)})
    for x in leaves:
        x.grad = None
    del o, ht
    empty_cache()

    # timed again, warm
    sync()
    started = time.perf_counter()
    o, ht = gla.chunk(*leaves, output_final_state=True)
    sync()
    warm_forward_s = time.perf_counter() - started
    torch.autograd.backward([o, ht], [do, dht])
    sync()
    warm_total_s = time.perf_counter() - started
    del o, ht
    for x in leaves:
        x.grad = None
    empty_cache()
    print(f"warm: forward {warm_forward_s * 1e3:.1f} ms, forward+backward {warm_total_s * 1e3:.1f} ms", flush=True)

    with torch.no_grad():
        _, state = gla.chunk(q[:, :-tail], k[:, :-tail], v[:, :-tail], g[:, :-tail], output_final_state=True)
    parts = [x[:, -tail:].detach().clone().requires_grad_() for x in (q, k, v, g)]
    o_tail, ht_tail = gla.chunk(*parts, initial_state=state, output_final_state=True)
    torch.autograd.backward([o_tail, ht_tail], [do[:, -tail:], dht])
    separate = {"o": o_tail, "final_state": ht_tail}
    separate.update({f"d{name}": x.grad for name, x in zip("qkvg", parts)})
    errors = {name: relative_error(full[name], separate[name]) for name in full}
    ok = max(errors.values()) <= 1e-2
    print(f"last {tail} tokens against a separate run: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items())
          + (" ok" if ok else " FAIL"), flush=True)

    meta = environment() if device == "cuda" else {"device": "cpu", "date": time.strftime("%Y-%m-%d")}
    record = {**meta, "spec": "gla", "B": 1, "T": T, "H": H, "K": K, "V": V, "dtype": str(dtype).removeprefix("torch."), "tail": tail,
              "elements_per_input": T * H * K, "state_elements": T // 64 * H * K * V,
              "first_forward_ms": forward_s * 1e3, "first_forward_backward_ms": total_s * 1e3,
              "forward_ms": warm_forward_s * 1e3, "forward_backward_ms": warm_total_s * 1e3,
              "peak_memory_gib": peak / GiB, "memory_before_gib": base / GiB, "input_gib": input_bytes / GiB,
              "tail_errors": errors, "ok": ok}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"long-{meta['device'].replace(' ', '-')}-{meta['date']}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
