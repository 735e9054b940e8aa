# generated from specs/rwkv6.yaml (sha256 3d97625cd6463310) by linattn-gen 0.1.0; do not edit
"""`Layer`: a `rwkv6` attention layer for models, built around the generated ops.

x [B, T, D] -> q, k, v, w, u projections -> rwkv6 -> rms_swish output norm -> output projection.
Gate: logsigmoid(low_rank projection of x) / 16.0, a log-space decay in (-inf, 0).
Calls with at most 16 tokens (decode) run `recurrent`, longer ones `chunk`; both return the new state.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .ops import chunk, recurrent

RECURRENT_MAX_TOKENS = 16


class Layer(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, *, head_dim: int | None = None, value_dim: int | None = None,
                 gate_rank: int = 16, gate_temperature: float = 16.0,
                 norm_eps: float = 1e-05):
        super().__init__()
        if hidden_size % num_heads and head_dim is None:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}; pass head_dim")
        self.num_heads = num_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.value_dim = value_dim or self.head_dim
        H, K, V = num_heads, self.head_dim, self.value_dim
        self.q_proj = nn.Linear(hidden_size, H * K, bias=False)
        self.k_proj = nn.Linear(hidden_size, H * K, bias=False)
        self.v_proj = nn.Linear(hidden_size, H * V, bias=False)
        self.u = nn.Parameter(torch.zeros(H, K))
        gate_size = H * K
        self.gate_temperature = gate_temperature
        self.gate_proj = nn.Sequential(nn.Linear(hidden_size, gate_rank, bias=False),
                                       nn.Linear(gate_rank, gate_size, bias=True))
        self.output_gate = nn.Linear(hidden_size, H * V, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(V))
        self.norm_eps = norm_eps
        self.o_proj = nn.Linear(H * V, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None):
        """x: [B, T, hidden_size]; state: [B, H, K, V] from the previous call, or None. Returns (y, new_state)."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, hidden_size], got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_dim, self.value_dim
        q = self.q_proj(x).view(B, T, H, K)
        k = self.k_proj(x).view(B, T, H, K)
        v = self.v_proj(x).view(B, T, H, V)
        gate = self.gate_proj(x).float().view(B, T, H, K)
        w = F.logsigmoid(gate) / self.gate_temperature
        u = self.u
        op = recurrent if T <= RECURRENT_MAX_TOKENS else chunk
        o, new_state = op(q, k, v, w, u, initial_state=state, output_final_state=True, cu_seqlens=cu_seqlens)
        o32 = o.float()
        o32 = o32 * torch.rsqrt(o32.square().mean(-1, keepdim=True) + self.norm_eps) * self.norm_weight
        o = (o32 * F.silu(self.output_gate(x).float().view(B, T, H, V))).to(x.dtype)
        return self.o_proj(o.reshape(B, T, H * V)), new_state
