"""Check a generated op against `interpret` (float64): fresh random inputs, forward, final state, every gradient."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .interpret import interpret, recurrence_of
from .ir import Kind


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    spec: str
    shape: tuple
    dtype: str
    errors: dict  # name -> relative error ||a - b|| / ||b|| (RMS of a - b where b is exactly zero)

    @property
    def max_error(self) -> float:
        return max(self.errors.values())


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||; the RMS of the difference where `expected` is exactly zero.

    A reference can vanish identically (the gate gradient of a single step with no initial state: the decay only
    multiplies a zero state); relative to it, the kernel's rounding noise would read as an error of 1e24.
    """
    actual, expected = actual.detach(), expected.detach().double()
    diff = (actual.double() - expected).norm()
    if not torch.isfinite(diff):
        return float("inf")
    norm = expected.norm()
    if norm == 0:
        return float(diff / max(expected.numel(), 1) ** 0.5)
    return float(diff / norm)


def random_inputs(spec_path, B, T, H, K, V, *, dtype=torch.float32, device="cpu", gate_scale=1.0, seed=None,
                  with_initial_state=True):
    """The spec's inputs in its order: normals in `dtype`, gates logsigmoid of normals times gate_scale in float32
    (log decays in (-inf, 0)); and an initial state."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(torch.seed() if seed is None else seed)
    rec = recurrence_of(spec_path)
    gates = {g.name for g in rec.gates}
    sizes = {Kind.SCALAR: (B, T, H), Kind.KEY: (B, T, H, K), Kind.VALUE: (B, T, H, V)}
    tensors = []
    for name, kind in zip(rec.inputs, rec.input_kinds):
        x = torch.randn(*((H, K) if name in rec.per_head_inputs else sizes[kind]), generator=gen)
        if name in gates:
            tensors.append(torch.nn.functional.logsigmoid(x).mul(gate_scale).to(device))
        else:
            tensors.append(x.to(device=device, dtype=dtype))
    if not with_initial_state:
        initial_state = None
    elif rec.normalization == "sum":
        initial_state = _reachable_state(spec_path, tensors, B, H, K, V, gen)
    else:
        initial_state = torch.randn(B, H, rec.state_rows(K), state_width(rec, V), generator=gen)
    return tensors, (None if initial_state is None else initial_state.to(device))


def _reachable_state(spec_path, tensors, B, H, K, V, gen, prefix: int = 16) -> torch.Tensor:
    """A normaliser's initial state: the float64 reference's final state after `prefix` random tokens.

    The denominator phi(q) . z is positive only for a z the recurrence can reach (a sum of features of keys); a random
    z makes it cross zero, and the test would then measure the division's ill-conditioning instead of the kernels."""
    rec = recurrence_of(spec_path)
    sizes = {Kind.SCALAR: (B, prefix, H), Kind.KEY: (B, prefix, H, K), Kind.VALUE: (B, prefix, H, V)}
    gates = {g.name for g in rec.gates}
    prefix_inputs = []
    for name, kind, x in zip(rec.inputs, rec.input_kinds, tensors):
        if name in rec.per_head_inputs:
            prefix_inputs.append(x.detach().cpu().double())
            continue
        y = torch.randn(*sizes[kind], generator=gen, dtype=torch.float64)
        prefix_inputs.append(torch.nn.functional.logsigmoid(y) if name in gates else y)
    _, state = interpret(spec_path, *prefix_inputs, output_final_state=True)
    return state.float()


def state_width(rec, V: int) -> int:
    """The last dim of a state: V, plus the normaliser's z column under normalization "sum"."""
    return V + (rec.normalization == "sum")


class _RecurrentAsChunk:
    def __init__(self, module):
        self.chunk = module.recurrent


def as_chunk(module, op: str):
    """What check_op and the other checks call `.chunk` on: the module itself for op "chunk", or a wrapper whose
    `chunk` is the module's token-by-token `recurrent` for op "recurrent"."""
    if op not in ("chunk", "recurrent"):
        raise ValueError(f"op must be 'chunk' or 'recurrent', got {op!r}")
    return module if op == "chunk" else _RecurrentAsChunk(module)


def check_op(module, spec_path, B, T, H, K, V, *, dtype=torch.float32, device="cpu", gate_scale=1.0, seed=None,
             with_initial_state=True, reference_device=None, reference_slice=None,
             gates_in_dtype=False) -> CheckResult:
    """Run `module.chunk` and `interpret` on the same fresh inputs and cotangents; return relative errors.

    reference_slice=(nb, nh) runs the float64 reference on the first nb sequences and nh heads only (they are
    independent), which keeps the token-by-token reference's memory small at benchmark shapes.
    gates_in_dtype: the gates (and per-head inputs) in `dtype` too, as a benchmark times them, instead of float32;
    some kernels apply to 16-bit gates only (the Gluon output pass).
    """
    inputs, h0 = random_inputs(spec_path, B, T, H, K, V, dtype=dtype, device=device, gate_scale=gate_scale,
                               seed=seed, with_initial_state=with_initial_state)
    if gates_in_dtype:
        inputs = [x.to(dtype) for x in inputs]
    xs = [x.clone().requires_grad_() for x in inputs]
    h0x = None if h0 is None else h0.clone().requires_grad_()
    o, ht = module.chunk(*xs, initial_state=h0x, output_final_state=True)
    # the cotangents come from the same seed as the inputs, so one seed reproduces a whole check
    gen = torch.Generator(device="cpu")
    gen.manual_seed(torch.seed() if seed is None else seed + 1)
    do = torch.randn(o.shape, generator=gen).to(o.device)
    dht = torch.randn(ht.shape, generator=gen).to(ht.device)
    ((o.float() * do).sum() + (ht * dht).sum()).backward()

    ref_device = reference_device or device
    nb, nh = reference_slice or (B, H)

    def cut(x, state=False):  # [B, T, H, ...] or, for states, [B, H, K, V]
        return x[:nb, :nh] if state else x[:nb, :, :nh]

    rec = recurrence_of(spec_path)
    per_head = [name in rec.per_head_inputs for name in rec.inputs]  # [H, K] inputs: cut by heads only
    ys = [(x.detach()[:nh] if one_per_head else cut(x.detach())).to(ref_device, torch.float64).requires_grad_()
          for x, one_per_head in zip(inputs, per_head)]
    h0y = None if h0 is None else cut(h0, True).to(ref_device, torch.float64).requires_grad_()
    o_ref, ht_ref = interpret(spec_path, *ys, initial_state=h0y, output_final_state=True, num_heads=H)
    loss = (o_ref * cut(do).to(ref_device, torch.float64)).sum()
    (loss + (ht_ref * cut(dht, True).to(ref_device, torch.float64)).sum()).backward()

    def err(a, b, state=False):
        return relative_error(cut(a, state).to(ref_device), b)

    errors = {"o": err(o, o_ref), "final_state": err(ht, ht_ref, True)}
    for name, x, y, one_per_head in zip(rec.input_names, xs, ys, per_head):
        if not one_per_head:
            errors[f"d{name}"] = err(x.grad, y.grad)
        elif nb == B:  # a per-head input's gradient sums over every sequence: comparable only on all of them
            errors[f"d{name}"] = relative_error(x.grad[:nh].to(ref_device), y.grad)
    if h0 is not None:
        errors["dinitial_state"] = err(h0x.grad, h0y.grad, True)
    return CheckResult(spec=str(spec_path), shape=(B, T, H, K, V), dtype=str(dtype).replace("torch.", ""),
                       errors=errors)


def _run_with_grads(op, inputs, initial_state, do, dht, cu_seqlens=None):
    """op(*inputs) with fresh leaves; backward of <o, do> + <final_state, dht>; returns named results and gradients."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    state = None if initial_state is None else initial_state.detach().clone().requires_grad_()
    kwargs = {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens}
    o, final_state = op(*leaves, initial_state=state, output_final_state=True, **kwargs)
    ((o.float() * do).sum() + (final_state * dht).sum()).backward()
    results = {"o": o.detach(), "final_state": final_state.detach()}
    results.update({f"d{i}": x.grad for i, x in enumerate(leaves)})
    if state is not None:
        results["dinitial_state"] = state.grad
    return results


def check_packed_batch(module, spec_path, op, lengths, H, K, V, *, dtype=torch.float32, device="cpu",
                       with_initial_state=True, cu_dtype=torch.int32, seed=0) -> dict:
    """A packed batch (`cu_seqlens`) against one call per sequence with the same op; relative error per result.

    Results: o, final_state, d0.. (gradients of the inputs in spec order) and dinitial_state. An empty sequence has
    no tokens: its final state is its initial state (zeros without one) and that state's gradient is dht.
    """
    N, T = len(lengths), sum(lengths)
    inputs, _ = random_inputs(spec_path, 1, T, H, K, V, dtype=dtype, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    rec = recurrence_of(spec_path)
    W = state_width(rec, V)
    per_head = {i for i, name in enumerate(rec.inputs) if name in rec.per_head_inputs}
    h0 = torch.randn(N, H, rec.state_rows(K), W, generator=gen).abs().to(device) if with_initial_state else None
    do = torch.randn(1, T, H, V, generator=gen).to(device)
    dht = torch.randn(N, H, rec.state_rows(K), W, generator=gen).to(device)
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    cu_seqlens = torch.tensor(offsets, dtype=cu_dtype)  # on the CPU, as the ops prefer
    fn = getattr(module, op)
    packed = _run_with_grads(fn, inputs, h0, do, dht, cu_seqlens)

    parts = {key: [] for key in packed}
    for n, (bos, eos) in enumerate(zip(offsets[:-1], offsets[1:])):
        if bos == eos:
            parts["final_state"].append(h0[n:n + 1] if h0 is not None else dht.new_zeros(1, H, rec.state_rows(K), W))
            if h0 is not None:
                parts["dinitial_state"].append(dht[n:n + 1])
            continue
        one = _run_with_grads(fn, [x if i in per_head else x[:, bos:eos] for i, x in enumerate(inputs)],
                              None if h0 is None else h0[n:n + 1], do[:, bos:eos], dht[n:n + 1])
        for key, value in one.items():
            parts[key].append(value)
    # per-token results join along T, states along sequences; a per-head input's gradient sums over the sequences
    by_sequence = {key: torch.stack(values).sum(0) if key in {f"d{i}" for i in per_head}
                   else torch.cat(values, dim=0 if key in ("final_state", "dinitial_state") else 1)
                   for key, values in parts.items()}
    return {key: relative_error(packed[key], by_sequence[key]) for key in packed}


def check_grouped_heads(module, spec_path, op, B, T, HK, groups, K, V, *, dtype=torch.float32, device="cpu",
                        cu_seqlens=None, seed=0, gate_scale=1.0) -> dict:
    """Grouped heads (H = HK * groups value heads sharing HK query/key heads and gates) against the ungrouped call on
    q, k and gates repeated over each group, whose dq, dk and gate gradients are summed back over the group."""
    H = HK * groups
    rec = recurrence_of(spec_path)
    if rec.value not in rec.inputs:
        raise ValueError(f"{rec.name}: the value is derived ({rec.value}), so value heads cannot outnumber key heads")
    # the inputs with H heads: the value, and a value-side gate (the 2-D gate's); the rest have HK
    per_value_head = [i for i, kind in enumerate(rec.input_kinds) if kind is Kind.VALUE]
    inputs, _ = random_inputs(spec_path, B, T, HK, K, V, dtype=dtype, device=device, seed=seed, gate_scale=gate_scale)
    gen = torch.Generator().manual_seed(seed + 1)
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    W = state_width(rec, V)
    gates = {g.name for g in rec.gates}
    for i in per_value_head:
        x = torch.randn(B, T, H, V, generator=gen)
        inputs[i] = (torch.nn.functional.logsigmoid(x).mul(gate_scale).to(device) if rec.inputs[i] in gates
                     else x.to(device, dtype))
    h0 = torch.randn(N, H, rec.state_rows(K), W, generator=gen).abs().to(device)
    do = torch.randn(B, T, H, V, generator=gen).to(device)
    dht = torch.randn(N, H, rec.state_rows(K), W, generator=gen).to(device)
    fn = getattr(module, op)
    grouped = _run_with_grads(fn, inputs, h0, do, dht, cu_seqlens)
    head_dim = [0 if name in rec.per_head_inputs else 2 for name in rec.inputs]  # [HK, K] inputs: heads first
    repeated = _run_with_grads(
        fn, [x if i in per_value_head else x.repeat_interleave(groups, head_dim[i]) for i, x in enumerate(inputs)],
        h0, do, dht, cu_seqlens)
    for i in range(len(inputs)):
        if i not in per_value_head:
            repeated[f"d{i}"] = repeated[f"d{i}"].unflatten(head_dim[i], (HK, groups)).sum(head_dim[i] + 1)
    return {key: relative_error(grouped[key], repeated[key]) for key in grouped}


class OutOfBounds(AssertionError):
    """A kernel load or store outside every tensor of its launch (see bounds_checked)."""


@contextlib.contextmanager
def bounds_checked():
    """Make the Triton interpreter refuse any load or store outside the storages of the launch's tensor arguments.

    The interpreter reads plain host memory, so an unmasked out-of-bounds access silently reads a neighbour (or
    garbage) where the GPU faults with "illegal memory access". Under this context every unmasked address of every
    load and store must fall inside one of the tensors passed to that launch; otherwise OutOfBounds names the kernel.
    """
    import numpy as np
    from triton.runtime import interpreter

    ranges = []  # (kernel name, starts, ends) of the launch in flight
    init_args, load, store = (interpreter.GridExecutor._init_args_hst, interpreter.InterpreterBuilder.create_masked_load,
                              interpreter.InterpreterBuilder.create_masked_store)

    def init_args_checked(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        storages = [x.untyped_storage() for x in (*args_hst, *kwargs_hst.values()) if hasattr(x, "untyped_storage")]
        ranges[:] = [(self.fn.__name__, np.array([s.data_ptr() for s in storages], dtype=np.uint64),
                      np.array([s.data_ptr() + s.nbytes() for s in storages], dtype=np.uint64))]
        return args_hst, kwargs_hst

    def check(ptrs, mask, access):
        name, starts, ends = ranges[0]
        width = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
        addresses = ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)].astype(np.uint64).ravel()
        inside = ((addresses[:, None] >= starts) & (addresses[:, None] + np.uint64(width) <= ends)).any(axis=1)
        if not inside.all():
            raise OutOfBounds(f"{name}: {access} of {int((~inside).sum())} element(s) outside every tensor argument")

    def load_checked(self, ptrs, mask, *args):
        check(ptrs, mask, "load")
        return load(self, ptrs, mask, *args)

    def store_checked(self, ptrs, value, mask, *args):
        check(ptrs, mask, "store")
        return store(self, ptrs, value, mask, *args)

    interpreter.GridExecutor._init_args_hst = init_args_checked
    interpreter.InterpreterBuilder.create_masked_load = load_checked
    interpreter.InterpreterBuilder.create_masked_store = store_checked
    try:
        yield
    finally:
        interpreter.GridExecutor._init_args_hst = init_args
        interpreter.InterpreterBuilder.create_masked_load = load
        interpreter.InterpreterBuilder.create_masked_store = store
