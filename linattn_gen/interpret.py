"""The reference: a spec's recurrence evaluated token by token in plain PyTorch, straight from its expressions.

`interpret` walks the parsed expression trees of `recurrence.state` and `recurrence.output` once per step; it uses
nothing from the planner or the kernels, so it is the oracle every generated kernel is tested against. It works in
any dtype and autograd flows through it (run it in float64 for tests).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .expr import BinOp, Call, Neg, Node, Number, Symbol
from .ir import Kind, Recurrence, build_ir
from .spec import parse_spec

_RANK = {Kind.SCALAR: 0, Kind.KEY: 1, Kind.VALUE: 1, Kind.FEATURE: 1, Kind.STATE: 2}


@functools.lru_cache(maxsize=64)
def _recurrence_for(path: str, mtime_ns: int) -> Recurrence:
    return build_ir(parse_spec(path))


def recurrence_of(spec_path: str | Path) -> Recurrence:
    path = str(spec_path)
    return _recurrence_for(path, Path(path).stat().st_mtime_ns)


def _expand(value: torch.Tensor, kind: Kind, target: Kind) -> torch.Tensor:
    """Insert the trailing axes that let a value of `kind` broadcast against one of `target`."""
    if kind is target or kind is Kind.STATE:
        return value
    if kind is Kind.SCALAR:
        return value[(...,) + (None,) * _RANK[target]] if isinstance(value, torch.Tensor) else value
    if target is Kind.STATE:
        return value[..., :, None] if kind in (Kind.KEY, Kind.FEATURE) else value[..., None, :]
    return value


class _Evaluator:
    def __init__(self, env: dict[str, tuple[object, Kind]]):
        self.env = env

    def __call__(self, node: Node):
        if isinstance(node, Number):
            return node.value, Kind.SCALAR
        if isinstance(node, Symbol):
            return self.env[node.name]
        if isinstance(node, Neg):
            value, kind = self(node.operand)
            return -value, kind
        if isinstance(node, Call):
            args = [self(a) for a in node.args]
            if node.function == "outer":
                (a, _), (b, _) = args
                return a[..., :, None] * b[..., None, :], Kind.STATE
            (value, kind), = args
            if node.function == "taylor2":
                return taylor2(value), Kind.FEATURE
            fn = {"exp": torch.exp, "log": torch.log, "elu": torch.nn.functional.elu}[node.function]
            if not isinstance(value, torch.Tensor):
                return fn(torch.tensor(float(value), dtype=torch.float64)).item(), kind
            return fn(value), kind
        if isinstance(node, BinOp):
            (a, ka), (b, kb) = self(node.left), self(node.right)
            if node.op == "@":
                return torch.einsum("...k,...kv->...v", a, b), Kind.VALUE
            kind = max(ka, kb, key=lambda k: (_RANK[k], k is Kind.STATE))
            if {ka, kb} == {Kind.KEY, Kind.VALUE}:  # a key-vector times a value-vector: their outer product
                kind = Kind.STATE
            a, b = _expand(a, ka, kind), _expand(b, kb, kind)
            if node.op == "+":
                return a + b, kind
            if node.op == "-":
                return a - b, kind
            if node.op == "*":
                return a * b, kind
            if node.op == "/":
                return a / b, kind
            if node.op == "**":
                return a**b, kind
        raise TypeError(node)


def taylor2(x: torch.Tensor) -> torch.Tensor:
    """Based's second-order Taylor feature map of exp(q . k / sqrt(K)) (see ir.FeatureExpansion), over the last
    axis: [..., K] -> [..., 1 + K + K^2], x' = x / K^(1/4), phi = [1, x', vec(x' x'^T) / sqrt(2)] (row-major)."""
    K = x.shape[-1]
    x = x * K**-0.25
    quadratic = (x[..., :, None] * x[..., None, :]).flatten(-2) / 2**0.5
    return torch.cat([torch.ones_like(x[..., :1]), x, quadratic], -1)


NORMALIZER_EPS = 1e-6  # normalization "sum": o_t = y_t / (q_t . z_t + NORMALIZER_EPS)


def interpret(spec_path, *inputs, scale=None, initial_state=None, output_final_state=False, num_heads=None):
    """Run the spec's recurrence step by step. Inputs in spec order, shapes as for the generated `chunk`; returns
    (o, final_state). num_heads: the model's H when the inputs hold only its first heads (constants written in h and
    H, such as Lightning's slopes, depend on it); default the inputs' H."""
    rec = recurrence_of(spec_path)
    if len(inputs) != len(rec.inputs):
        raise TypeError(f"{rec.name} takes {len(rec.inputs)} inputs ({', '.join(rec.inputs)}), got {len(inputs)}")
    tensors = dict(zip(rec.inputs, inputs))
    key_sized = next(x for name, x, kind in zip(rec.inputs, inputs, rec.input_kinds)
                     if kind is Kind.KEY and name not in rec.per_head_inputs)
    value_sized = next(x for x, kind in zip(inputs, rec.input_kinds) if kind is Kind.VALUE)
    B, T, H, K = key_sized.shape
    V = value_sized.shape[-1]
    dtype = key_sized.dtype
    scale = K**-0.5 if scale is None else scale
    normalized = rec.normalization == "sum"
    state = key_sized.new_zeros(B, H, rec.state_rows(K), V + normalized) if initial_state is None else initial_state.to(dtype)
    # normalization "sum": z (the last state column) follows the same recurrence with v = 1
    state, z = (state[..., :V], state[..., V:]) if normalized else (state, None)
    ones = value_sized.new_ones(B, H, 1)
    if num_heads is not None and num_heads < H:
        raise ValueError(f"num_heads={num_heads} is less than the inputs' {H} heads")
    heads = torch.arange(H, device=key_sized.device, dtype=dtype)[None, :]
    env: dict[str, tuple[object, Kind]] = {"scale": (scale, Kind.SCALAR), "h": (heads, Kind.SCALAR),
                                          "H": (float(num_heads or H), Kind.SCALAR)}
    evaluate = _Evaluator(env)
    for const in rec.constants:
        env[const.target] = evaluate(const.value)
    per_step = {name: (tensors[name], kind) for name, kind in zip(rec.inputs, rec.input_kinds)
                if name not in rec.per_head_inputs}
    for name in rec.per_head_inputs:  # [H, K]: the same at every step and in every sequence
        env[name] = (tensors[name].to(dtype)[None], Kind.KEY)
    outputs = []
    for t in range(T):
        for name, (tensor, kind) in per_step.items():
            env[name] = (tensor[:, t].to(dtype), kind)
        env["S"] = env["S_prev"] = (state, Kind.STATE)
        state, _ = evaluate(rec.state_update.value)
        env["S"] = (state, Kind.STATE)
        out, _ = evaluate(rec.output.value)
        if normalized:
            value = env[rec.value]
            env[rec.value], env["S"] = (ones, Kind.VALUE), (z, Kind.STATE)
            z, _ = evaluate(rec.state_update.value)
            env["S"] = (z, Kind.STATE)
            denominator, _ = evaluate(rec.output.value)
            env[rec.value] = value
            out = out / (denominator + NORMALIZER_EPS)
        outputs.append(out)
    o = torch.stack(outputs, dim=1) if outputs else value_sized.new_zeros(B, 0, H, V)
    if normalized:
        state = torch.cat([state, z], -1)
    return o, (state if output_final_state else None)
