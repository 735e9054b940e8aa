"""Stage 3: lower a `Recurrence` to a chunked tensor-core plan. Every decision about the kernels is made here.

`plan_chunked(rec)` returns a frozen `ChunkPlan`: how the decay enters the chunk form, chunk and sub-chunk sizes,
which products run on tensor cores (`tl.dot`), whether states are materialized per chunk, the dtype of every
intermediate, and launch configurations per head shape. Templates only render these fields.
"""

from __future__ import annotations

import enum
from dataclasses import astuple, dataclass

import sympy

from . import __version__
from .codegen.printer import python_code, torch_code, triton_code
from .expr import render
from .ir import DecayKind, GateShape, Kind, Recurrence

HEAD_DIMS = (16, 32, 64, 128, 256)
DTYPES = ("float32", "bfloat16", "float16")


class DecayForm(enum.Enum):
    """How the decay enters the chunk form (see ../shared/notes/math.md)."""

    NONE = "none"  # no decay: scores are q k^T
    MASK = "mask"  # the decay factors out of the key sum: scores are (q k^T) * exp(b_i - b_j), one C x C mask
    SUBCHUNK = "subchunk"  # per key dim: secondary-level chunking, each query sub-chunk rebased on its first row
    # (with a value-side gate too, ChunkPlan.value_gate_name: the same rebasing of the values, see there)


class DecaySource(enum.Enum):
    NONE = "none"
    PER_HEAD = "per_head"  # a [H] vector of log decays computed on the host from the spec's expression of h, H
    GATE = "gate"  # a log-space gate input, [B, T, H] or [B, T, H, K]


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    block_k: int
    block_v: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True, kw_only=True)
class StatePassSplit:
    """When to cut the sequential state passes (`fwd_h`, `bwd_dh`) into segments.

    Those passes walk a sequence's chunks in order, one program per (sequence, head, K block, V block): 64 programs
    for one 16-head sequence, half an H100. Below `below_programs_per_sm` x SMs programs (dense batches only), each
    sequence is cut into chunk-aligned segments, into as many as keep the programs at or below
    `target_programs_per_sm` x SMs (one wave: the passes run two blocks per SM) with at least `min_segment_chunks`
    chunks per segment; sequences of fewer than `min_sequence_chunks` chunks are never cut. The segments run in
    parallel from a zero state; a scan over their end states and a fold of the result into every chunk's state follow
    (the two-level scheme of sequence parallelism, inside one GPU).
    """

    below_programs_per_sm: float
    target_programs_per_sm: float
    min_segment_chunks: int
    min_sequence_chunks: int = 16
    exists: bool = True  # whether the plan has the split state pass at all (segment_scan_kernel and its fold)


@dataclass(frozen=True, kw_only=True)
class CarriedForward:
    """When the forward carries the state through the chunks in registers (`chunk_fwd_carried_kernel`: q, k, v, the
    gates and o cross HBM once; chunk states are written only for a backward) instead of the state pass then the
    output pass (`fwd_h` then `fwd_o`, whose output pass parallelises over chunks).

    One program walks a whole sequence per (head, V block), so this pays only when those programs fill the GPU:
    from `min_programs_per_sm` x SMs of them, for K <= `max_key_size` (the [K, BV] state and a chunk's [BT, K]
    operands live in registers). `min_programs_per_sm` None: never.
    """

    min_programs_per_sm: float | None
    max_key_size: int
    exists: bool = True  # whether the plan has chunk_fwd_carried_kernel at all


@dataclass(frozen=True, kw_only=True)
class GluonOutputPass:
    """When the forward's output pass runs as a Gluon kernel on Hopper (`chunk_fwd_o_gluon_kernel`, in the generated
    package's gluon_kernels.py) instead of `chunk_fwd_o_kernel`.

    A persistent kernel, one program per SM, walks the (chunk, head, V block) tiles: TMA loads each tile's gate,
    queries, keys, state and values into a ring of `num_stages` shared-memory stages while the tile before computes;
    the cumulative log decay is a 0/1 triangle product on the tensor cores (exact for a 16-bit gate that is its own
    log decay), and every chunk is one rebased block, factors exp(+-b_rel) from its first row. A chunk whose |b_rel|
    passes the span limit anywhere is flagged, not branched on (a test per element, no reduction across warps), and a
    second launch of `chunk_fwd_o_kernel` redoes the flagged chunks by its sub-chunk path.

    `configs`: (K, V) -> LaunchConfig (block_k = K: one key tile) for the head shapes it was measured at; other
    shapes, packed batches (cu_seqlens), lengths that are not a multiple of the chunk, 32-bit inputs and GPUs other
    than sm_90 run the Triton kernel. `in_inference`: whether a forward that saves nothing for a backward takes it
    too (see _gluon_output_pass). `exists`: whether the plan has the kernel at all.
    """

    configs: dict
    in_inference: bool
    exists: bool


@dataclass(frozen=True, kw_only=True)
class GluonCarriedForward:
    """When the forward runs as the Gluon carried pass on Hopper (`chunk_fwd_carried_gluon_kernel` in the generated
    package's gluon_kernels.py) instead of the state pass then the output pass.

    One program per (sequence, segment, head) walks the segment's chunks with the state on chip, so q, k, v, the gate
    and o cross HBM once (the two-pass forward also writes every chunk's state and reads it back: 2.4x those bytes at
    K = V = 128). Each chunk's output is made as the Gluon output pass makes it (TMA ring, triangle products,
    per-element span flags, flagged chunks redone by `chunk_fwd_o_kernel` from their entering state, which the pass
    writes out for them), then its state update as `chunk_fwd_h_kernel` makes it. Where the sequences and heads give
    fewer than `programs_per_sm` x SMs programs, each sequence is cut into that many segments (at least
    `min_segment_chunks` chunks each) and the state entering each comes first: `chunk_fwd_h_kernel` without storing
    chunk states (or on Hopper its Gluon counterpart, `gluon_state_pass`), then `segment_scan_kernel`. The state
    pass's programs walk their chunks in turn; where they would number fewer than `state_pass_programs_per_sm` x
    SMs, it cuts each carried segment into shorter ones (not shorter than `min_segment_chunks`), at the price of
    more steps for the scan.

    `configs`: (K, V) -> LaunchConfig (block_k = K, block_v = V: a program holds the whole [K, V] state) where it was
    built for; otherwise, and for packed batches, lengths that are not a multiple of the chunk, 32-bit inputs and
    other GPUs, the two passes run. `in_inference` / `in_training`: whether a forward that saves nothing for a
    backward / one that saves the chunk states takes it. `exists`: whether the plan has it at all.
    """

    configs: dict
    programs_per_sm: float
    min_segment_chunks: int
    state_pass_programs_per_sm: float
    # (num_warps, num_stages) of the state pass before it as a Gluon kernel (chunk_segment_ends_gluon_kernel: TMA
    # ring, triangle product), or None for chunk_fwd_h_kernel
    gluon_state_pass: tuple | None
    in_inference: bool
    in_training: bool
    exists: bool


@dataclass(frozen=True, kw_only=True)
class Autotune:
    """Launch configs to time on the first call per (kernel, head sizes, programs, chunks, dtype, GPU), keeping the
    fastest in an on-disk cache so that later processes do not time again. `candidates[kernel][(K, V)]` lists
    (BK, BV, num_warps, num_stages) clipped to that head (to V and to the state's rows: K, or the F expanded features,
    see _clipped_config), without repeats; the launch table's entry is always first and is used as is off the GPU,
    under CUDA-graph capture, and when tuning is off. Only kernels that write their outputs without reading them are
    listed: timing reruns them. `on_by_default`: tune unless LINATTN_GEN_AUTOTUNE=0 (otherwise only with
    LINATTN_GEN_AUTOTUNE=1). `rounds`: how many interleaved rounds time each candidate (each keeps its best)."""

    candidates: dict
    on_by_default: bool
    # Two since H200 run 11, where linear attention's and RetNet's forward+backward moved by up to 1.9x against run 9
    # at some T (0.569 -> 1.069 ms at T = 2048) and the other way at others, with their kernels unchanged and only
    # the candidate lists grown: one 5 ms round per candidate is a thin basis for a choice that sticks on disk. Not
    # yet confirmed as the cause on a GPU.
    rounds: int = 2


# Expanded features: 64-wide feature tiles (F = 273 for K = 16 fills 5 of them), and at most K = 32 (F = 1057): the
# state is F x V, so it grows as K^2 (Based uses K = 16).
FEATURE_BLOCK = 64
FEATURE_KEY_SIZES = (16, 32)


# the configs that came within about 15% of the best in some sweep (bench/results/sweep-*.json): where the best one
# moves with the spec and shape (bwd_dqkg: (64, 64, 8, 1) for linear attention, (64, 64, 4, 2) in the table); and
# for the state passes a narrow value block, which doubles their programs where a small batch leaves SMs idle; and
# the state passes' (64, 128, 4, x) and the output pass's (128, 128, 4, 2), fastest for GLA in H200 run 10's probe
# (bench/results/fwd-probe-run10-*); bwd_dqkg's (64, 64, 8, 2), which RetNet runs with a register cap (_REGISTER_CAPS)
_ALTERNATIVES = {
    "fwd_h": ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 3), (64, 32, 4, 2),
              (128, 128, 8, 2)),
    "fwd_o": ((128, 128, 4, 2), (64, 128, 4, 2), (64, 64, 4, 2)),
    "bwd_dh": ((64, 128, 8, 2), (64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
    "bwd_dqkg": ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
    "bwd_dv": ((64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 2)),
}


# The expanded-feature kernels (BK is the feature tile, fixed): wider value blocks, which expand each feature tile for
# fewer V blocks (run 9 profile of Based at V = 128: fwd_o and bwd_dv 2.31 ms each), and a narrower one for the state
# passes' programs. Untimed on a GPU so far, hence off unless LINATTN_GEN_AUTOTUNE=1.
_FEATURE_ALTERNATIVES = {
    "fwd_h": ((FEATURE_BLOCK, 128, 8, 2), (FEATURE_BLOCK, 32, 4, 2)),
    "fwd_o": ((FEATURE_BLOCK, 128, 8, 2), (FEATURE_BLOCK, 128, 4, 2)),
    "bwd_dh": ((FEATURE_BLOCK, 128, 8, 2), (FEATURE_BLOCK, 32, 4, 2)),
    "bwd_dqk": ((FEATURE_BLOCK, 128, 8, 2),),
    "bwd_dv": ((FEATURE_BLOCK, 128, 8, 2), (FEATURE_BLOCK, 128, 4, 2)),
}


def _candidates_per_head(candidates: dict, head_shapes, state_rows) -> dict:
    """kernel -> (K, V) -> its (BK, BV, num_warps, num_stages) candidates clipped to that head (a K-row state has
    state_rows(K) rows), in order and without repeats."""
    return {
        kernel: {(K, V): tuple(dict.fromkeys(astuple(_clipped_config(*config, state_rows(K), V)) for config in configs))
                 for K, V in head_shapes}
        for kernel, configs in candidates.items()
    }


def _autotune(form: DecayForm, features: bool) -> Autotune:
    if features:
        # the feature tile is the key block: it tiles F = 1 + K + K^2 features (see FeaturePlan), not the K inputs
        default = _feature_launch_config(64)
        candidates = {kernel: (default,) + alternatives for kernel, alternatives in _FEATURE_ALTERNATIVES.items()}
        head_shapes = [(K, V) for K in FEATURE_KEY_SIZES for V in HEAD_DIMS]
        return Autotune(candidates=_candidates_per_head(candidates, head_shapes, lambda K: 1 + K + K * K),
                        on_by_default=False)
    candidates = {}
    for kernel, default in _MEASURED[form].items():
        candidates[kernel] = (default,) + tuple(c for c in _ALTERNATIVES[kernel] if c != default)
    candidates = _candidates_per_head(candidates, [(K, V) for K in HEAD_DIMS for V in HEAD_DIMS], lambda K: K)
    # On by default since H200 run 8 (2026-12-01): GLA forward+backward 2-4% faster than the table alone at every T
    # of the performance issue (B*T = 16K, H = 16, K = V = 128, bf16: 2.543 -> 2.490 ms at T = 1K, 2.869 -> 2.827 at
    # 8K, 5.894 -> 5.823 at 32K), every tuned row checked against the float64 reference.
    return Autotune(candidates=candidates, on_by_default=True)


def _carried_forward(form: DecayForm, value_gate: bool, features: bool) -> CarriedForward:
    # Off: timed against the materialized forward on the H200 (run 8, 2026-12-01, bench/gpu_carried.py, bf16,
    # B*T = 16K, H = 16, K = V = 128, T = 1K-4K with 512 to 128 programs) it never paid. GLA's inference forward took
    # 1.09 ms carried against 0.62 materialized (one program walks every chunk's sub-chunk products in turn); RetNet
    # and linear attention were within 13% either way (0.19-0.23 ms). Fewer bytes do not help a forward bound by
    # per-chunk latency rather than bandwidth.
    # The 2-D gate and expanded features have no carried kernel (`exists` False): their forward is the materialized one.
    return CarriedForward(min_programs_per_sm=None, max_key_size=0 if features else 128,
                          exists=not (value_gate or features))


def _gluon_output_pass(form: DecayForm, log_decay_is_gate: bool, value_gate: bool, features: bool) -> GluonOutputPass:
    # H200 run 15 (2026-12-02, bench/gpu_gluon_fwd.py, GLA, bf16, B = 8, T = 2048, H = 16, K = V = 128): 0.126 ms
    # against the Triton kernel's 0.195 (1.14x the time its bytes take at copy bandwidth), outputs equal. What made
    # it: the span test per element instead of a block reduction (0.171 -> 0.126); 8 warps (4: 0.153) and two stages
    # of 108 KiB each (one stage, one program per tile: 0.192). Neither a barrier per operand group nor asynchronous
    # products helped. Only a per-key decay that is the gate itself (the triangle product sums the gate as loaded),
    # without a value gate or expanded features, has the kernel.
    # In the generated op (run 15, calls 6-7, profiler) it took 0.160-0.163 ms, and GLA's forward kernels 0.265-0.270
    # against 0.287 with the Triton pass; forward+backward gained at every T (1.629 -> 1.605 ms at T = 2048). But the
    # host needs 0.1-0.3 ms longer to issue a forward with it (six TMA descriptors encoded per launch), and a forward
    # alone is host-bound at these sizes: inference forwards took 0.40-0.49 ms against 0.29 at T <= 4K in call 7. So
    # it runs where a backward follows (training), and not in inference, until its host time comes down.
    exists = form is DecayForm.SUBCHUNK and log_decay_is_gate and not value_gate and not features
    configs = {(128, 128): LaunchConfig(block_k=128, block_v=128, num_warps=8, num_stages=2)} if exists else {}
    return GluonOutputPass(configs=configs, in_inference=False, exists=exists)


def _gluon_carried_forward(output_pass: GluonOutputPass, split: StatePassSplit) -> GluonCarriedForward:
    # H200 run 16 (2026-12-03, bench/gpu_gluon_carried.py, GLA, bf16, B*T = 16K, H = 16, K = V = 128), against the
    # 3x forward floor of the performance issue, which neither the Triton forwards nor the Gluon output pass reached
    # (3.35-4.7x, run 15): the inference forward's kernels took 0.165-0.168 ms at T <= 2K (2.1x the floor; the two
    # Gluon passes 0.262-0.266), outputs equal to the two passes' (relerr 0) for GLA, RWKV-6 and HGRN-2, and its
    # training forward gave the same gradients and faster forward+backward at every T but 4K (1.559 against 1.606
    # ms at 2K; 1.674 against 1.660 at 4K, before the state pass's segments were halved). The same plans as the
    # Gluon output pass have it (its chunk arithmetic is that kernel's), where the split state pass's scan exists.
    # One wave of programs: one block per SM fits (212 KiB of shared memory), and twice the segments (a second
    # wave) took 0.270 against 0.249 ms at T = 8K. The state pass before it (its segments' end states, then the
    # scan), call 4: where its programs were few it was latency-bound, 0.080 ms for 32 chunks each at T = 4K with
    # 128 programs, 0.046 for 16 with 256; where they were many, halving the segments saved nothing in the state
    # pass and doubled the scan's steps (T = 16K, 224 programs: 0.084 + 0.010 ms for 32 chunks, 0.085 + 0.025 for
    # 16). Hence the split below 1.5 programs per SM, for chunk_fwd_h_kernel. The Gluon state pass (the carried
    # kernel's update alone, TMA-fed; call 6) took 0.050-0.052 ms at T = 4K-16K and 0.100 at 32K, against
    # chunk_fwd_h_kernel's 0.046-0.085 and 0.158, and runs unsplit (0 programs per SM): split as far as allowed it
    # took 0.036-0.062 ms but the scan's extra steps cost more (0.021-0.128 against 0.004-0.009 ms).
    exists = output_pass.exists and split.exists
    configs = {(128, 128): LaunchConfig(block_k=128, block_v=128, num_warps=8, num_stages=2)} if exists else {}
    return GluonCarriedForward(configs=configs, programs_per_sm=1.0, min_segment_chunks=8,
                               state_pass_programs_per_sm=0.0, gluon_state_pass=(8, 3), in_inference=True,
                               in_training=True, exists=exists)


def _state_pass_split(form: DecayForm, source: DecaySource, value_gate: bool, features: bool) -> StatePassSplit:
    """Split the state passes only where their per-step work is heavy enough to pay for the scan and fold.

    Measured on the H100 (run 7, 2026-11-23, bf16, B*T = 16K tokens, H = 16, K = V = 128, forward+backward ms):
    per-key gates gain (GLA T=16K 3.79 -> 3.10, T=32K 7.48 -> 6.19; T=8K unchanged), while a scalar decay's passes
    are cheap and the split loses (RetNet T=8K 0.95 -> 1.35, T=16K 1.15 -> 2.14; again on the H200 in run 14 with
    one-wave segments, RetNet 0.850 -> 1.397 at 16K and linear attention 1.425 -> 1.458 at 32K). For those, a
    threshold of 0 programs per SM means never."""
    if value_gate or features:
        # the split pass's scan and fold know a per-key (or scalar) chunk decay only (a 2-D gate's would be [K, V]),
        # and the expanded-feature kernels walk no segments: no split pass at all (`exists` False)
        return StatePassSplit(below_programs_per_sm=0.0, target_programs_per_sm=2.0, min_segment_chunks=8,
                              exists=False)
    if form is DecayForm.SUBCHUNK:
        # 0.4, not 0.5, since H200 run 10 (bench/gpu_split.py, call 6, float32 gates): with the faster fwd_h, GLA at
        # T = 8K, B = 2 (64 state-pass programs, 0.48 per SM) lost by splitting (f+b 2.873 against 2.663 ms, forward
        # 0.712 against 0.647), while T = 16K and 32K (32 programs) still gained (2.928 against 3.546; 5.762 against
        # 7.005). A bf16 gate makes each sequential step cheaper, which favours the unsplit pass further.
        return StatePassSplit(below_programs_per_sm=0.4, target_programs_per_sm=2.0, min_segment_chunks=8)
    if form is DecayForm.MASK and source is DecaySource.GATE:
        # Mamba-2's gate per step and head (H200 run 14, bench/gpu_split.py, B = 1, bf16; fwd_h has 32 programs and
        # bwd_dh 64): split from T = 32K (512 chunks), where two calls agreed, f+b 2.769 -> 2.084 and 2.736 -> 2.075
        # ms, forward 1.057 -> 0.758. At T = 16K the forward gained as much (0.535 -> 0.410, twice) but f+b, near
        # host-bound, went 1.407 -> 1.326 in one call and 1.389 -> 1.823-2.015 in the other; at 8K (B = 2) the
        # split lost, 1.027 -> 1.464
        return StatePassSplit(below_programs_per_sm=0.5, target_programs_per_sm=2.0, min_segment_chunks=8,
                              min_sequence_chunks=512)
    return StatePassSplit(below_programs_per_sm=0.0, target_programs_per_sm=2.0, min_segment_chunks=8)


@dataclass(frozen=True, kw_only=True)
class LayerPlan:
    """The generated `Layer`: what the spec's `layer:` section asks for, plus the op choice per call."""

    gate_projection: str  # low_rank | linear (only with a gate input)
    gate_rank: int
    gate_temperature: float
    gate_bias: float | None  # the gate projection's initial bias; None: PyTorch's default initialisation
    output_norm: str  # rms_swish | group_norm | none
    norm_eps: float
    short_conv_size: int  # default kernel size of the causal convolution over the projected inputs; 0: none
    recurrent_max_tokens: int  # calls with at most this many tokens (decode) use `recurrent`, longer ones `chunk`
    projections: tuple[tuple[str, str], ...]  # (input, "K" or "V"): the inputs projected from x (not the gate)
    parameters: tuple[str, ...]  # [H, K] inputs: learned per-head parameters of the layer, zeros at first


@dataclass(frozen=True, kw_only=True)
class DerivedOperand:
    name: str
    torch_expression: str  # elementwise, of the input tensors by name (autograd differentiates it), in float32
    text: str


@dataclass(frozen=True, kw_only=True)
class FeaturePlan:
    """An expanding feature map on the query and key (taylor2), formed inside the kernels.

    The state's key axis is the F = 1 + K + K^2 expanded features. Kernels that read q or k along that axis build a
    [BT, BF] tile of features from the raw [BT, K] input with gathered loads: feature f is c_f * x'_i(f) * x'_j(f)
    (f = 0: the constant 1; 1..K: x'_{f-1}; the rest x'_i x'_j / sqrt(2)), masked past F, x' = x * K^input_scale_exponent.
    The intra-chunk scores need no expansion: phi(q) . phi(k) = 1 + s + s^2 / 2 with s = q . k * K^(2 * exponent).
    The backward contracts the features' gradient back to the raw q and k in the kernels, a [BT, BF] x [BF, K] product
    with one-hot matrices of i(f) and j(f).
    """

    name: str
    input_scale_exponent: float
    feature_block: int  # BF: features per tile (F padded to a multiple of it)
    key_sizes: tuple[int, ...]  # the raw K the generated op accepts: F grows as K^2


@dataclass(frozen=True, kw_only=True)
class ChunkPlan:
    name: str
    description: str
    paper: str
    spec_path: str
    spec_sha256: str
    generator_version: str
    inputs: tuple[str, ...]  # the op's positional tensor arguments, in spec order
    # operands computed on the host from the inputs before the kernels: (name, torch expression, spec text)
    derived: tuple[DerivedOperand, ...]
    query: str
    key: str
    value: str
    gate_name: str | None
    gate_per_key: bool
    # The 2-D gate: a second, value-side gate [B, T, H, V] whose decay multiplies the key gate's, D = exp(a)^T exp(b).
    # Its factor exp(F_t - F_r) between a query row t and a key row r does not factor out of the scores, so the value
    # side is rebased the way the key side is: per query sub-chunk on its first row s, the earlier rows' values by
    # exp(F_s - F_r) <= 1 and the product by exp(F_t - F_s) <= 1, and pairs inside one sub-chunk row by row, exactly;
    # the backward mirrors it. The value gate's gradient is reverse-cumsum(o * do - v * dv) plus colsum(S * dS) at
    # the chunk's end (the key gate's identity, transposed), with o recomputed in float32 in the dv kernel.
    value_gate_name: str | None
    log_decay_of_value_gate: str | None  # Triton expression of `b_f` (the loaded value-gate block)
    dlog_decay_of_value_gate: str | None
    dlog_decay_of_value_gate_torch: str | None  # of the fp32 tensor `gate`
    # call features the kernels of this plan do not have yet: feature -> why; the op raises ValueError naming it
    refused_features: dict
    decay_form: DecayForm
    decay_source: DecaySource
    log_decay_of_gate: str | None  # Triton expression of `b_g` (the loaded gate block)
    # the log decay is the gate itself: a 16-bit gate's values are then exact in its dtype, and the kernels' 0/1
    # triangle products that sum it down a chunk (_rows_summed) take one pass in that dtype instead of three in tf32
    log_decay_is_gate: bool
    dlog_decay_of_gate: str | None  # its derivative, for the gate gradient's chain rule
    dlog_decay_of_gate_torch: str | None  # the same on the host, of the fp32 tensor `gate` (recurrent backward)
    log_decay_of_gate_torch: str | None  # the log decay on the host, of `gate` (sequence-parallel state fold)
    log_decay_per_head: str | None  # Python expression of `h` and `H`
    scaled_output: bool
    # normalization "sum": o_t = y_t / (q_t . z_t + eps), z_t = D_t z_{t-1} + k_t, the state's recurrence with v = 1;
    # computed by the same kernels on a value of ones `normalizer_width` wide
    normalizer: bool
    normalizer_eps: float
    normalizer_width: int
    state_update_text: str  # the spec's recurrence, for the generated docstring
    output_text: str
    chunk_size: int
    sub_chunk_size: int
    # kernel 1 writes the state entering every chunk; kernel 2 computes outputs in parallel. A single launch for both
    # passes, the output programs waiting on per-chunk counts of the stored states, was measured slower on the H200
    # (run 11: 0.338 ms against 0.291 for GLA at T = 2048, B = 8, bf16) and removed in run 12;
    # bench/gpu_fwd_probe.py --segments still times a probe copy of it (probe_fwd_overlapped).
    materialize_states: bool
    save_states_for_backward: bool  # keep the forward's states instead of recomputing them in backward
    state_dtype: str  # accumulation and final-state dtype
    stored_state_dtype: str  # dtype of the per-chunk states in HBM: the input dtype halves their bytes
    dot_products: tuple[str, ...]  # every product that runs as tl.dot, for the generated docstring
    # a sub-chunk whose cumulative log decay spans more than this (per input dtype) is split into single rows, where
    # every rebased factor is <= 1; below it the factor exp(span) is safe in the dot's operand dtype
    subchunk_span_limit: dict
    dot_precision: dict  # per input dtype: Triton's input_precision for tl.dot
    # the backward's intra-chunk dq/dk products keep fp32 operands (tf32 on tensor cores): the gate gradient
    # q * dq - k * dk cancels, and bf16 operands there cost it a 10x larger error (measured: 2e-2 -> 2e-3)
    intra_grad_dot_precision: dict
    launch: dict  # kernel name -> {(K, V): LaunchConfig}
    # kernel name -> {(BK, BV, num_warps, num_stages): registers}: the launches that run with ptxas' registers per
    # thread capped (Triton's maxnreg), whichever of the table or the tuner picks them (see _REGISTER_CAPS)
    register_caps: dict
    state_pass_split: StatePassSplit
    carried_forward: CarriedForward
    gluon_output_pass: GluonOutputPass
    gluon_carried_forward: GluonCarriedForward
    autotune: Autotune
    # [H, K] inputs, and an output that reads S_prev plus the current token's bonus (see ir.Recurrence): the op runs
    # the kernels on the step before's keys, values and gates and adds the bonus on the host
    per_head_inputs: tuple[str, ...]
    previous_state_output: bool
    bonus_key: str | None
    bonus: DerivedOperand | None
    layer: LayerPlan
    # taylor2(q), taylor2(k): the expanded-feature kernels (None: the query and key are the state's rows as they are)
    features: FeaturePlan | None
    # chunk(sp_group=...) has its code generated: False exactly where refused_features names sp_group
    sequence_parallel: bool


# (BK, BV, num_warps, num_stages) per kernel for K = V = 128, from bench/sweep.py on an H100 (bf16, B*T = 16K,
# H = 16; results in bench/results/sweep-*.json). BK = 32 with 4 warps is never used: ptxas miscompiles WGMMA
# there with Triton 3.6 on Hopper.
_MEASURED = {
    # SUBCHUNK fwd_h and fwd_o: H200 run 10 (bench/gpu_fwd_probe.py, T = 2048, B = 8, after the kernels' cumulative
    # sums changed): fwd_h 0.101 ms against 0.149 for (64, 64, 4, 3); fwd_o 0.194 against 0.286 for (64, 128, 4, 2).
    # bwd_dh and bwd_dv: H200 run 13 (bench/gpu_register_caps.py, same shape, bf16 gate): 4 warps where the table had
    # 8, bwd_dh 0.112 ms against 0.207 (the tuner already chose it) and bwd_dv 0.278 against 0.452 (the tuner's
    # choice until then, (128, 128, 8, 2), took 0.38)
    DecayForm.SUBCHUNK: {"fwd_h": (64, 128, 4, 3), "fwd_o": (128, 128, 4, 2), "bwd_dh": (64, 128, 4, 3),
                         "bwd_dqkg": (64, 64, 8, 1), "bwd_dv": (64, 128, 4, 2)},
    DecayForm.MASK: {"fwd_h": (64, 128, 8, 2), "fwd_o": (64, 128, 4, 2), "bwd_dh": (64, 64, 4, 3),
                     "bwd_dqkg": (64, 64, 4, 2), "bwd_dv": (64, 64, 4, 2)},
    DecayForm.NONE: {"fwd_h": (64, 128, 8, 2), "fwd_o": (64, 128, 4, 2), "bwd_dh": (64, 128, 8, 2),
                     "bwd_dqkg": (64, 64, 4, 2), "bwd_dv": (64, 64, 8, 2)},
}


# The normaliser's value of ones is 64 wide, not the 16 the kernels accept: on the H100 (Triton 3.6) the 16-wide
# tiles with 8 warps fault in chunk_bwd_dv_kernel (illegal address; clean in the bounds-checked interpreter, like the
# WGMMA miscompiles of narrow tiles in ../shared/notes/triton-interpreter.md), and 64 x 64 tiles are the narrowest
# whose launch configs have passed on the GPU. bench/probe_narrow_values.py re-tests the narrower choices.
NORMALIZER_WIDTH = 64


# Register caps: a launch whose kernel ptxas lets take more registers than a further block per SM leaves room for
# runs with them capped (Triton's maxnreg) where that costs no spill. Measured on the H200 in run 13
# (bench/gpu_register_caps.py, RetNet, T = 2048, B = 8, bf16, each kernel alone): fwd_o 0.105 ms at 168 registers
# against 0.123 at ptxas' 194; bwd_dqkg 0.306 at 8 warps and 128 against 0.339 at 4 warps; bwd_dv 0.116 at 128
# against 0.131 at 146. GLA's and linear attention's kernels gained nothing (their caps spill, or they already fit).
# Keyed by the launch config as clipped to the head (K = V = 128 here), so that other head shapes run uncapped, and
# given to the kernels measured: a decay per head (RetNet, Lightning: the same kernels). bwd_dqkg's capped config is
# a tuner candidate (_ALTERNATIVES), not the table's default: uncapped, 8 warps took 0.406 ms. Mamba-2's per-step
# scalar gate (run 14, same probe and shape): fwd_o 0.109 ms at 168 against 0.121 at ptxas' 204, bwd_dv 0.125 at 128
# against 0.140 at 147; its bwd_dqkg is fastest uncapped with 4 warps (0.331 against 0.374 at 8 warps and 128).
_REGISTER_CAPS = {
    (DecayForm.MASK, DecaySource.PER_HEAD): {"fwd_o": {(64, 128, 4, 2): 168}, "bwd_dqkg": {(64, 64, 8, 2): 128},
                                             "bwd_dv": {(64, 64, 4, 2): 128}},
    (DecayForm.MASK, DecaySource.GATE): {"fwd_o": {(64, 128, 4, 2): 168}, "bwd_dv": {(64, 64, 4, 2): 128}},
}


# ptxas miscompiles WGMMA for 32-row key blocks with 4 warps (Triton 3.6-3.8 on Hopper, Triton issue 11366; fla prunes
# the same configs, ../shared/notes/triton-interpreter.md): a K = 32 head clips the 64-row key blocks of the table and
# of the tuner's candidates to 32, and such a launch takes 8 warps instead. K = V = 128 never reaches it.
MIN_WARPS_BY_KEY_BLOCK = {32: 8}


def _clipped_config(bk: int, bv: int, warps: int, stages: int, K: int, V: int) -> LaunchConfig:
    """A (BK, BV, num_warps, num_stages) for K = V = 128 clipped to a head of K x V (K: the state's rows)."""
    bk, bv = min(K, bk), min(V, bv)
    return LaunchConfig(block_k=bk, block_v=bv, num_warps=max(warps, MIN_WARPS_BY_KEY_BLOCK.get(bk, 0)),
                        num_stages=stages)


def _launch_table(decay_form: DecayForm) -> dict:
    """Launch configs per kernel and head shape: the measured K = V = 128 choice, blocks clipped to K and V.

    The recurrent kernels keep a [K, BV] fp32 state in registers: BV shrinks as K grows (not yet tuned on a GPU).
    """
    table: dict[str, dict] = {
        "recurrent": {
            (K, V): LaunchConfig(block_k=K, block_v=min(V, max(16, 4096 // K)), num_warps=4, num_stages=1)
            for K in HEAD_DIMS
            for V in HEAD_DIMS
        }
    }
    # the carried forward holds a whole [BT, K] chunk and the [K, BV] state (see CarriedForward)
    table["fwd_carried"] = {
        (K, V): _clipped_config(K, 64, 4 if K <= 64 else 8, 2, K, V) for K in HEAD_DIMS for V in HEAD_DIMS
    }
    # the split state pass's scan over segments and fold into the chunks' states: elementwise, memory-bound
    for kernel in ("segment_scan", "fold_states"):
        table[kernel] = {(K, V): LaunchConfig(block_k=min(K, 64), block_v=min(V, 64), num_warps=4, num_stages=1)
                         for K in HEAD_DIMS for V in HEAD_DIMS}
    for kernel, config in _MEASURED[decay_form].items():
        table[kernel] = {(K, V): _clipped_config(*config, K, V) for K in HEAD_DIMS for V in HEAD_DIMS}
    return table


def _feature_launch_config(V: int) -> tuple:
    """(BK, BV, num_warps, num_stages) of the expanded-feature kernels (not yet tuned on a GPU): BK is the feature
    tile."""
    return (FEATURE_BLOCK, min(V, 64), 4, 2)


def _feature_launch_table() -> dict:
    config = {}
    for K in FEATURE_KEY_SIZES:
        for V in HEAD_DIMS:
            bk, bv, warps, stages = _feature_launch_config(V)
            config[(K, V)] = LaunchConfig(block_k=bk, block_v=bv, num_warps=warps, num_stages=stages)
    return {kernel: dict(config) for kernel in ("recurrent", "fwd_h", "fwd_o", "bwd_dh", "bwd_dqk", "bwd_dv")}


def _feature_plan(rec: Recurrence) -> FeaturePlan | None:
    expansion = rec.feature_expansion
    if expansion is None:
        return None
    return FeaturePlan(name=expansion.name, input_scale_exponent=expansion.input_scale_exponent,
                       feature_block=FEATURE_BLOCK, key_sizes=FEATURE_KEY_SIZES)


def plan_chunked(rec: Recurrence) -> ChunkPlan:
    """Choose the chunked plan for a recurrence. Pure: same IR in, same plan out."""
    decay = rec.decay
    if decay.kind is DecayKind.NONE:
        form, source = DecayForm.NONE, DecaySource.NONE
    elif decay.factors_out_of_key_sum:
        form = DecayForm.MASK
        source = DecaySource.GATE if decay.kind is DecayKind.DATA_DEPENDENT else DecaySource.PER_HEAD
    else:
        form, source = DecayForm.SUBCHUNK, DecaySource.GATE
    gate, value_gate = decay.gate, decay.value_gate
    b_g = sympy.Symbol(gate.name, real=True) if gate else None
    b_f = sympy.Symbol(value_gate.name, real=True) if value_gate else None
    refused = {}
    if value_gate:
        refused = {
            "sp_group": "sequence parallelism's state exchange carries a per-key (or scalar) total decay, not a 2-D one",
        }
    chunk_size = rec.chunk_size_hint or 64
    sub_chunk_size = min(rec.sub_chunk_size_hint or 16, chunk_size)

    dots = ["inter-chunk output: (q * decay) @ S", "state update: (k * decay)^T @ v", "intra-chunk output: A @ v"]
    if form is DecayForm.SUBCHUNK:
        dots.insert(2, f"intra-chunk scores: one rebased (q, k^T) product per {sub_chunk_size}-row query sub-chunk")
    else:
        dots.insert(2, "intra-chunk scores: q @ k^T" + (" (times a decay mask)" if form is DecayForm.MASK else ""))
    dots += ["backward: dA = do @ v^T, dq/dk inter and intra, dv = A^T @ do + (k * decay) @ dS"]
    if value_gate:
        dots[3] = (f"intra-chunk output: one A @ v product per {sub_chunk_size}-row query sub-chunk on the earlier rows, "
                   "values rebased on the sub-chunk's first row (pairs inside a sub-chunk elementwise)")
        dots[4] = ("backward: dA = do @ v^T rebased as the output, dq/dk inter and intra, dv = A^T @ do rebased as "
                   "the output + (k * decay) @ dS, and the output again (in float32) for the value gate's gradient")
    features = _feature_plan(rec)
    log_decay_is_gate = bool(gate) and sympy.simplify(decay.log_decay - b_g) == 0
    if features is not None:
        dots = [f"inter-chunk output: {features.name}(q) @ S, one {features.feature_block}-feature tile at a time",
                f"state update: {features.name}(k)^T @ v", "intra-chunk scores: s = q @ k^T on the raw q, k, then "
                "1 + s + s^2 / 2", "intra-chunk output: A @ v",
                "backward: dphi = do @ S^T and v @ dS^T per feature tile, contracted to raw dq, dk with one-hot "
                "products; ds = (do @ v^T) * (1 + s), dq += ds @ k, dk += ds^T @ q; dv = A^T @ do + phi(k) @ dS"]
    if features is not None:
        refused["sp_group"] = (f"the sequence-parallel fold of the earlier ranks' states reads the query along the "
                               f"state's rows, which are {features.name} features here")

    output_pass = _gluon_output_pass(form, log_decay_is_gate, value_gate is not None, features is not None)
    split = _state_pass_split(form, source, value_gate is not None, features is not None)
    return ChunkPlan(
        name=rec.name, description=rec.description, paper=rec.paper, spec_path=rec.spec_path,
        spec_sha256=rec.spec_sha256, generator_version=__version__, inputs=rec.inputs,
        # derived operands are computed in float32 and rounded once to the inputs' dtype: HGRN-2's k = 1 - exp(g) in
        # bf16 cancelled to about 10% error for gates near 0 (H200 run 16: 2.4e-2 output error at gates x 0.05)
        derived=tuple(DerivedOperand(name=d.name, text=d.text, torch_expression=torch_code(
                          d.expression, {s: f"{s.name}.float()" for s in d.expression.free_symbols}))
                      for d in rec.derived),
        per_head_inputs=rec.per_head_inputs, previous_state_output=rec.previous_state_output, bonus_key=rec.bonus_key,
        bonus=(DerivedOperand(name=rec.bonus.name, text=rec.bonus.text, torch_expression=torch_code(rec.bonus.expression, {}))
               if rec.bonus else None),
        query=rec.query, key=rec.key, value=rec.value,
        gate_name=gate.name if gate else None, gate_per_key=bool(gate and gate.shape is GateShape.KEY),
        value_gate_name=value_gate.name if value_gate else None,
        log_decay_of_value_gate=triton_code(decay.log_value_decay, {b_f: "b_f"}) if value_gate else None,
        dlog_decay_of_value_gate=triton_code(decay.dlog_value_decay_dgate, {b_f: "b_f"}) if value_gate else None,
        dlog_decay_of_value_gate_torch=(torch_code(decay.dlog_value_decay_dgate, {b_f: "gate"})
                                        if value_gate else None),
        refused_features=refused,
        decay_form=form, decay_source=source,
        log_decay_of_gate=triton_code(decay.log_decay, {b_g: "b_g"}) if gate else None,
        log_decay_is_gate=log_decay_is_gate,
        dlog_decay_of_gate=triton_code(decay.dlog_decay_dgate, {b_g: "b_g"}) if gate else None,
        dlog_decay_of_gate_torch=torch_code(decay.dlog_decay_dgate, {b_g: "gate"}) if gate else None,
        log_decay_of_gate_torch=torch_code(decay.log_decay, {b_g: "gate"}) if gate else None,
        log_decay_per_head=python_code(decay.log_decay) if source is DecaySource.PER_HEAD else None,
        scaled_output=rec.scaled_output, normalizer=rec.normalization == "sum", normalizer_eps=1e-6,
        normalizer_width=NORMALIZER_WIDTH, state_update_text=render(rec.state_update), output_text=render(rec.output),
        chunk_size=chunk_size, sub_chunk_size=sub_chunk_size,
        materialize_states=True, save_states_for_backward=True, state_dtype="float32", stored_state_dtype="input",
        dot_products=tuple(dots),
        # exp(75) * |k| summed over a block stays far below the fp32/bf16 maximum; fp16 tops out near exp(11)
        subchunk_span_limit={"float32": 75.0, "bfloat16": 75.0, "float16": 8.0},
        dot_precision={"float32": "tf32x3", "bfloat16": "tf32", "float16": "tf32"},
        intra_grad_dot_precision={"float32": "tf32x3", "bfloat16": "tf32", "float16": "tf32"},
        launch=_launch_table(form) if features is None else _feature_launch_table(),
        register_caps=_REGISTER_CAPS.get((form, source), {}) if features is None else {},
        state_pass_split=split,
        carried_forward=_carried_forward(form, value_gate is not None, features is not None),
        gluon_output_pass=output_pass,
        gluon_carried_forward=_gluon_carried_forward(output_pass, split),
        autotune=_autotune(form, features is not None),
        features=features, sequence_parallel="sp_group" not in refused,
        layer=LayerPlan(
            gate_projection=rec.layer.gate_projection, gate_rank=rec.layer.gate_rank,
            gate_temperature=rec.layer.gate_temperature, gate_bias=rec.layer.gate_bias, output_norm=rec.layer.output_norm, norm_eps=1e-5,
            short_conv_size=rec.layer.short_conv,
            # below a chunk, the token loop does less work than padding a chunk and launching five kernels
            recurrent_max_tokens=16,
            projections=tuple((name, "V" if kind is Kind.VALUE else "K")
                              for name, kind in zip(rec.inputs, rec.input_kinds)
                              if name not in {g.name for g in rec.gates} and name not in rec.per_head_inputs),
            parameters=rec.per_head_inputs,
        ),
    )
