# generated from specs/gla.yaml (sha256 f2e30ebd32ea7aa2) by linattn-gen 0.1.0; do not edit
"""`Layer`: a `gla` attention layer for models, built around the generated ops.

x [B, T, D] -> q, k, v, g projections -> gla -> output norm (rms_swish unless `output_norm` says otherwise) -> output projection.
Gate: logsigmoid(low_rank projection of x) / 16.0, a log-space decay in (-inf, 0); the projection's bias starts at 4.0 (`gate_bias`).
Calls with at most 16 tokens (decode) run `recurrent`, longer ones `chunk`; both return the new state.
With `short_conv_size > 0`, a causal depthwise convolution (and SiLU) mixes each token's projected q, k, v with the
tokens before it, and the state is the pair (recurrent state, convolution cache).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import chunk, recurrent

RECURRENT_MAX_TOKENS = 16
# per-head RMSNorm times a swish output gate (GLA), per-head group norm (RetNet), or none; the spec's is the default
OUTPUT_NORMS = ("rms_swish", "group_norm", "none")


class ShortConvolution(nn.Module):
    """A causal depthwise convolution over time, then SiLU, as in Mamba and fla's layers.

    Recall needs it: a value sits one token after its key, and a state update sees one token at a time. Between calls
    the last `size - 1` inputs are the cache, [N, size - 1, channels] (N sequences); packed sequences (`cu_seqlens`)
    never see each other's tokens."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.size = size
        bound = 1 / math.sqrt(size)  # nn.Conv1d's default for a depthwise kernel (fan-in = size)
        self.weight = nn.Parameter(torch.empty(channels, size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None, cu_seqlens: torch.Tensor | None):
        """x [B, T, C] -> (SiLU(conv(x)) [B, T, C], new cache [N, size - 1, C])."""
        B, T, C = x.shape
        width = self.size - 1
        weight = self.weight.to(x.dtype)
        if cu_seqlens is None:
            history = x.new_zeros(B, width, C) if cache is None else cache.to(x.dtype)
            full = torch.cat([history, x], dim=1)
            y = F.conv1d(full.transpose(1, 2), weight.unsqueeze(1), groups=C).transpose(1, 2)
            return F.silu(y), full[:, full.shape[1] - width:]
        # packed (B = 1): every tap reads its own sequence's token, or that sequence's cache before its first token
        N = cu_seqlens.numel() - 1
        bounds = cu_seqlens.to(device=x.device, dtype=torch.int64)
        starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
        history = x.new_zeros(N, width, C) if cache is None else cache.to(x.dtype)
        rows = torch.cat([history.reshape(N * width, C), x[0]])  # the caches' rows, then the tokens'

        def row(seq, pos):  # pos: place within sequence `seq`, from -width (oldest cached input) on
            return torch.where(pos >= 0, N * width + starts[seq] + pos, seq * width + width + pos)

        t = torch.arange(T, device=x.device)
        seq = torch.bucketize(t, bounds[1:], right=True)
        pos = t - starts[seq]
        y = sum(rows[row(seq, pos - j)] * weight[:, width - j] for j in range(self.size))
        every = torch.arange(N, device=x.device)[:, None]
        new_cache = rows[row(every, lengths[:, None] - width + torch.arange(width, device=x.device))]
        return F.silu(y).unsqueeze(0), new_cache


class Layer(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, *, head_dim: int | None = None, value_dim: int | None = None,
                 gate_rank: int = 16, gate_temperature: float = 16.0,
                 gate_bias: float | None = 4.0,
                 short_conv_size: int = 0, output_norm: str = "rms_swish",
                 norm_eps: float = 1e-05):
        super().__init__()
        if output_norm not in OUTPUT_NORMS:
            raise ValueError(f"output_norm must be one of {OUTPUT_NORMS}, got {output_norm!r}")
        if short_conv_size < 0 or short_conv_size == 1:
            raise ValueError(f"short_conv_size must be 0 (none) or a kernel size >= 2, got {short_conv_size}")
        if hidden_size % num_heads and head_dim is None:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}; pass head_dim")
        self.num_heads = num_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.value_dim = value_dim or self.head_dim
        H, K, V = num_heads, self.head_dim, self.value_dim
        self.q_proj = nn.Linear(hidden_size, H * K, bias=False)
        self.k_proj = nn.Linear(hidden_size, H * K, bias=False)
        self.v_proj = nn.Linear(hidden_size, H * V, bias=False)
        self.projected_sizes = [H * K, H * K, H * V]
        self.conv = ShortConvolution(sum(self.projected_sizes), short_conv_size) if short_conv_size else None
        gate_size = H * K
        self.gate_temperature = gate_temperature
        self.gate_proj = nn.Sequential(nn.Linear(hidden_size, gate_rank, bias=False),
                                       nn.Linear(gate_rank, gate_size, bias=True))
        if gate_bias is not None:
            # a forget-gate bias: the initial decay per step is logsigmoid(gate_bias) / gate_temperature, so that
            # the state starts by remembering and learns where to forget
            nn.init.constant_(self.gate_proj[-1].bias, gate_bias)
        self.output_norm = output_norm
        if output_norm == "rms_swish":
            self.output_gate = nn.Linear(hidden_size, H * V, bias=False)
            self.norm_weight = nn.Parameter(torch.ones(V))
        elif output_norm == "group_norm":
            self.norm = nn.GroupNorm(H, H * V, eps=norm_eps)
        self.norm_eps = norm_eps
        self.o_proj = nn.Linear(H * V, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, state=None, cu_seqlens: torch.Tensor | None = None):
        """x: [B, T, hidden_size]; state from the previous call, or None. Returns (y, new_state).

        The state is the recurrent state [N, H, K, V] (N = B, or the number of sequences
        with `cu_seqlens`); with a short convolution, the pair (that, convolution cache [N, size - 1, channels])."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, hidden_size], got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_dim, self.value_dim
        conv_cache = None
        if self.conv is not None and state is not None:
            if not (isinstance(state, (tuple, list)) and len(state) == 2):
                raise TypeError("state: with a short convolution, pass the (recurrent state, convolution cache) pair "
                                "that the previous call returned")
            state, conv_cache = state
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        if self.conv is not None:
            mixed, conv_cache = self.conv(torch.cat([q, k, v], dim=-1), conv_cache, cu_seqlens)
            q, k, v = mixed.split(self.projected_sizes, dim=-1)
        q = q.view(B, T, H, K)
        k = k.view(B, T, H, K)
        v = v.view(B, T, H, V)
        gate = self.gate_proj(x).float().view(B, T, H, K)
        g = F.logsigmoid(gate) / self.gate_temperature
        op = recurrent if T <= RECURRENT_MAX_TOKENS else chunk
        o, new_state = op(q, k, v, g, initial_state=state, output_final_state=True, cu_seqlens=cu_seqlens)
        if self.output_norm == "rms_swish":
            o32 = o.float()
            o32 = o32 * torch.rsqrt(o32.square().mean(-1, keepdim=True) + self.norm_eps) * self.norm_weight
            o = (o32 * F.silu(self.output_gate(x).float().view(B, T, H, V))).to(x.dtype)
        elif self.output_norm == "group_norm":
            o = self.norm(o.reshape(B * T, H * V).float()).to(x.dtype).view(B, T, H, V)
        if self.conv is not None:
            new_state = (new_state, conv_cache)
        return self.o_proj(o.reshape(B, T, H * V)), new_state
