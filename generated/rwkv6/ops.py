# generated from specs/rwkv6.yaml (sha256 3d97625cd6463310) by linattn-gen 0.1.0; do not edit
"""`rwkv6`: RWKV-6 with a data-dependent per-key decay, an output that reads the previous state, and a bonus u.

Paper: Peng et al. Eagle and Finch, RWKV with Matrix-Valued States and Dynamic Recurrence (2024)

Recurrence per (batch, head), state S of shape [K, V] in float32:
    S = ((exp(w) * S) + outer(k, v))
    o = (scale * (q @ (S_prev + outer((u * k), v))))
"""

import functools
import inspect
import json
import os
import re
import tempfile
import warnings
from typing import Optional

import torch
import torch.distributed as dist
from triton.runtime.errors import OutOfResources

from .kernels import (
    recurrent_bwd_dlog_kernel,
    recurrent_bwd_kernel,
    recurrent_fwd_kernel,
    chunk_bwd_dh_kernel,
    chunk_bwd_dqkg_kernel,
    chunk_bwd_dv_kernel,
    chunk_fwd_carried_kernel,
    chunk_fwd_h_kernel,
    chunk_fwd_o_kernel,
    fold_segment_states_kernel,
    segment_scan_kernel,
)


# launch the kernels through _CachedLaunch's cache of compiled kernels (LINATTN_GEN_LAUNCH_CACHE=0: Triton's entry
# every time)
LAUNCH_CACHE = os.environ.get("LINATTN_GEN_LAUNCH_CACHE", "1") != "0"


class _CachedLaunch:
    """`kernel[grid](*args, **kwargs)` through a cache of the kernel's compiled forms.

    Triton's own entry binds and specializes every argument and looks up its cache on each launch: 36.8 us of host
    time per launch on the H200's host, against 14.3 us for the compiled kernel launched directly (run 12,
    bench/gpu_host_overhead.py). A forward+backward makes five launches, and below about a millisecond of kernel
    time it is host-bound, as is a decode step. The key is what Triton compiles for: the device, the keyword
    arguments (constexprs and launch options) and Triton's own specialization of each positional argument (a
    tensor's dtype and 16-byte alignment, an int's width and divisibility by 16), so a cached kernel runs exactly
    where Triton would have chosen it. A miss goes through Triton's entry (which compiles, or raises
    OutOfResources) and keeps what it returns. Under the interpreter there is nothing compiled to keep."""

    def __init__(self, kernel, specialize=None):
        self.kernel = kernel
        parameters = inspect.signature(getattr(kernel, "fn", kernel)).parameters
        self.params = list(parameters)
        # what a parameter left out of a launch takes (the compiled kernel is given every one)
        self.defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
        # the interpreter's kernels have no device caches: every launch goes through them as they are; so does every
        # launch with LINATTN_GEN_LAUNCH_CACHE=0
        self.cached = (specialize is not None or hasattr(kernel, "device_caches")) and LAUNCH_CACHE
        self.specialize = specialize  # tests: a stand-in for Triton's specialization, on the CPU
        self.specializers = {}  # device -> Triton's specialization with the device's backend
        self.compiled = {}

    def __getitem__(self, grid):
        if not self.cached:
            return self.kernel[grid]
        return functools.partial(self._launch, grid)

    def _specializer(self, device):
        if self.specialize is not None:
            return self.specialize
        if device not in self.specializers:
            from triton._C.libtriton import native_specialize_impl

            backend = self.kernel.device_caches[device][3]
            self.specializers[device] = lambda arg: native_specialize_impl(backend, arg, False, True, True)
        return self.specializers[device]

    def _launch(self, grid, *args, **kwargs):
        device = None if self.specialize is not None else torch.cuda.current_device()
        specialize = self._specializer(device)
        # a tensor passed by name (chunk_fwd_o_kernel's span_flag) is keyed by its specialization, as a positional one:
        # keyed by the tensor itself, every call would miss, go through Triton's entry and keep the tensor alive here
        key = (device, tuple((name, specialize(value) if isinstance(value, torch.Tensor) else value)
                             for name, value in kwargs.items()), *(specialize(arg) for arg in args))
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.kernel[grid](*args, **kwargs)
            self.compiled[key] = compiled.result() if hasattr(compiled, "result") else compiled
            return
        # the compiled kernel takes a 3-D grid (Triton's entry pads a shorter one) and every parameter in order: the
        # positional ones, then the keyword ones by name, or their defaults
        grid = (*grid, 1, 1)[:3] if len(grid) < 3 else grid
        compiled[grid](*args, *(kwargs[name] if name in kwargs else self.defaults[name]
                                for name in self.params[len(args):]))


recurrent_bwd_dlog_kernel = _CachedLaunch(recurrent_bwd_dlog_kernel)
recurrent_bwd_kernel = _CachedLaunch(recurrent_bwd_kernel)
recurrent_fwd_kernel = _CachedLaunch(recurrent_fwd_kernel)
chunk_bwd_dh_kernel = _CachedLaunch(chunk_bwd_dh_kernel)
chunk_bwd_dqkg_kernel = _CachedLaunch(chunk_bwd_dqkg_kernel)
chunk_bwd_dv_kernel = _CachedLaunch(chunk_bwd_dv_kernel)
chunk_fwd_carried_kernel = _CachedLaunch(chunk_fwd_carried_kernel)
chunk_fwd_h_kernel = _CachedLaunch(chunk_fwd_h_kernel)
chunk_fwd_o_kernel = _CachedLaunch(chunk_fwd_o_kernel)
fold_segment_states_kernel = _CachedLaunch(fold_segment_states_kernel)
segment_scan_kernel = _CachedLaunch(segment_scan_kernel)

CHUNK_SIZE = 64
SUB_CHUNK_SIZE = 16
GATES = ("w", )
SPAN_LIMIT = {'float32': 75.0, 'bfloat16': 75.0, 'float16': 8.0}
DOT_PRECISION = {'float32': 'tf32x3', 'bfloat16': 'tf32', 'float16': 'tf32'}
INTRA_GRAD_DOT_PRECISION = {'float32': 'tf32x3', 'bfloat16': 'tf32', 'float16': 'tf32'}
# kernel -> (K, V) -> (BK, BV, num_warps, num_stages), chosen by the planner
LAUNCH = {
    "recurrent": {
        (16, 16): (16, 16, 4, 1),
        (16, 32): (16, 32, 4, 1),
        (16, 64): (16, 64, 4, 1),
        (16, 128): (16, 128, 4, 1),
        (16, 256): (16, 256, 4, 1),
        (32, 16): (32, 16, 4, 1),
        (32, 32): (32, 32, 4, 1),
        (32, 64): (32, 64, 4, 1),
        (32, 128): (32, 128, 4, 1),
        (32, 256): (32, 128, 4, 1),
        (64, 16): (64, 16, 4, 1),
        (64, 32): (64, 32, 4, 1),
        (64, 64): (64, 64, 4, 1),
        (64, 128): (64, 64, 4, 1),
        (64, 256): (64, 64, 4, 1),
        (128, 16): (128, 16, 4, 1),
        (128, 32): (128, 32, 4, 1),
        (128, 64): (128, 32, 4, 1),
        (128, 128): (128, 32, 4, 1),
        (128, 256): (128, 32, 4, 1),
        (256, 16): (256, 16, 4, 1),
        (256, 32): (256, 16, 4, 1),
        (256, 64): (256, 16, 4, 1),
        (256, 128): (256, 16, 4, 1),
        (256, 256): (256, 16, 4, 1),
    },
    "fwd_carried": {
        (16, 16): (16, 16, 4, 2),
        (16, 32): (16, 32, 4, 2),
        (16, 64): (16, 64, 4, 2),
        (16, 128): (16, 64, 4, 2),
        (16, 256): (16, 64, 4, 2),
        (32, 16): (32, 16, 8, 2),
        (32, 32): (32, 32, 8, 2),
        (32, 64): (32, 64, 8, 2),
        (32, 128): (32, 64, 8, 2),
        (32, 256): (32, 64, 8, 2),
        (64, 16): (64, 16, 4, 2),
        (64, 32): (64, 32, 4, 2),
        (64, 64): (64, 64, 4, 2),
        (64, 128): (64, 64, 4, 2),
        (64, 256): (64, 64, 4, 2),
        (128, 16): (128, 16, 8, 2),
        (128, 32): (128, 32, 8, 2),
        (128, 64): (128, 64, 8, 2),
        (128, 128): (128, 64, 8, 2),
        (128, 256): (128, 64, 8, 2),
        (256, 16): (256, 16, 8, 2),
        (256, 32): (256, 32, 8, 2),
        (256, 64): (256, 64, 8, 2),
        (256, 128): (256, 64, 8, 2),
        (256, 256): (256, 64, 8, 2),
    },
    "segment_scan": {
        (16, 16): (16, 16, 4, 1),
        (16, 32): (16, 32, 4, 1),
        (16, 64): (16, 64, 4, 1),
        (16, 128): (16, 64, 4, 1),
        (16, 256): (16, 64, 4, 1),
        (32, 16): (32, 16, 4, 1),
        (32, 32): (32, 32, 4, 1),
        (32, 64): (32, 64, 4, 1),
        (32, 128): (32, 64, 4, 1),
        (32, 256): (32, 64, 4, 1),
        (64, 16): (64, 16, 4, 1),
        (64, 32): (64, 32, 4, 1),
        (64, 64): (64, 64, 4, 1),
        (64, 128): (64, 64, 4, 1),
        (64, 256): (64, 64, 4, 1),
        (128, 16): (64, 16, 4, 1),
        (128, 32): (64, 32, 4, 1),
        (128, 64): (64, 64, 4, 1),
        (128, 128): (64, 64, 4, 1),
        (128, 256): (64, 64, 4, 1),
        (256, 16): (64, 16, 4, 1),
        (256, 32): (64, 32, 4, 1),
        (256, 64): (64, 64, 4, 1),
        (256, 128): (64, 64, 4, 1),
        (256, 256): (64, 64, 4, 1),
    },
    "fold_states": {
        (16, 16): (16, 16, 4, 1),
        (16, 32): (16, 32, 4, 1),
        (16, 64): (16, 64, 4, 1),
        (16, 128): (16, 64, 4, 1),
        (16, 256): (16, 64, 4, 1),
        (32, 16): (32, 16, 4, 1),
        (32, 32): (32, 32, 4, 1),
        (32, 64): (32, 64, 4, 1),
        (32, 128): (32, 64, 4, 1),
        (32, 256): (32, 64, 4, 1),
        (64, 16): (64, 16, 4, 1),
        (64, 32): (64, 32, 4, 1),
        (64, 64): (64, 64, 4, 1),
        (64, 128): (64, 64, 4, 1),
        (64, 256): (64, 64, 4, 1),
        (128, 16): (64, 16, 4, 1),
        (128, 32): (64, 32, 4, 1),
        (128, 64): (64, 64, 4, 1),
        (128, 128): (64, 64, 4, 1),
        (128, 256): (64, 64, 4, 1),
        (256, 16): (64, 16, 4, 1),
        (256, 32): (64, 32, 4, 1),
        (256, 64): (64, 64, 4, 1),
        (256, 128): (64, 64, 4, 1),
        (256, 256): (64, 64, 4, 1),
    },
    "fwd_h": {
        (16, 16): (16, 16, 4, 3),
        (16, 32): (16, 32, 4, 3),
        (16, 64): (16, 64, 4, 3),
        (16, 128): (16, 128, 4, 3),
        (16, 256): (16, 128, 4, 3),
        (32, 16): (32, 16, 8, 3),
        (32, 32): (32, 32, 8, 3),
        (32, 64): (32, 64, 8, 3),
        (32, 128): (32, 128, 8, 3),
        (32, 256): (32, 128, 8, 3),
        (64, 16): (64, 16, 4, 3),
        (64, 32): (64, 32, 4, 3),
        (64, 64): (64, 64, 4, 3),
        (64, 128): (64, 128, 4, 3),
        (64, 256): (64, 128, 4, 3),
        (128, 16): (64, 16, 4, 3),
        (128, 32): (64, 32, 4, 3),
        (128, 64): (64, 64, 4, 3),
        (128, 128): (64, 128, 4, 3),
        (128, 256): (64, 128, 4, 3),
        (256, 16): (64, 16, 4, 3),
        (256, 32): (64, 32, 4, 3),
        (256, 64): (64, 64, 4, 3),
        (256, 128): (64, 128, 4, 3),
        (256, 256): (64, 128, 4, 3),
    },
    "fwd_o": {
        (16, 16): (16, 16, 4, 2),
        (16, 32): (16, 32, 4, 2),
        (16, 64): (16, 64, 4, 2),
        (16, 128): (16, 128, 4, 2),
        (16, 256): (16, 128, 4, 2),
        (32, 16): (32, 16, 8, 2),
        (32, 32): (32, 32, 8, 2),
        (32, 64): (32, 64, 8, 2),
        (32, 128): (32, 128, 8, 2),
        (32, 256): (32, 128, 8, 2),
        (64, 16): (64, 16, 4, 2),
        (64, 32): (64, 32, 4, 2),
        (64, 64): (64, 64, 4, 2),
        (64, 128): (64, 128, 4, 2),
        (64, 256): (64, 128, 4, 2),
        (128, 16): (128, 16, 4, 2),
        (128, 32): (128, 32, 4, 2),
        (128, 64): (128, 64, 4, 2),
        (128, 128): (128, 128, 4, 2),
        (128, 256): (128, 128, 4, 2),
        (256, 16): (128, 16, 4, 2),
        (256, 32): (128, 32, 4, 2),
        (256, 64): (128, 64, 4, 2),
        (256, 128): (128, 128, 4, 2),
        (256, 256): (128, 128, 4, 2),
    },
    "bwd_dh": {
        (16, 16): (16, 16, 4, 3),
        (16, 32): (16, 32, 4, 3),
        (16, 64): (16, 64, 4, 3),
        (16, 128): (16, 128, 4, 3),
        (16, 256): (16, 128, 4, 3),
        (32, 16): (32, 16, 8, 3),
        (32, 32): (32, 32, 8, 3),
        (32, 64): (32, 64, 8, 3),
        (32, 128): (32, 128, 8, 3),
        (32, 256): (32, 128, 8, 3),
        (64, 16): (64, 16, 4, 3),
        (64, 32): (64, 32, 4, 3),
        (64, 64): (64, 64, 4, 3),
        (64, 128): (64, 128, 4, 3),
        (64, 256): (64, 128, 4, 3),
        (128, 16): (64, 16, 4, 3),
        (128, 32): (64, 32, 4, 3),
        (128, 64): (64, 64, 4, 3),
        (128, 128): (64, 128, 4, 3),
        (128, 256): (64, 128, 4, 3),
        (256, 16): (64, 16, 4, 3),
        (256, 32): (64, 32, 4, 3),
        (256, 64): (64, 64, 4, 3),
        (256, 128): (64, 128, 4, 3),
        (256, 256): (64, 128, 4, 3),
    },
    "bwd_dqkg": {
        (16, 16): (16, 16, 8, 1),
        (16, 32): (16, 32, 8, 1),
        (16, 64): (16, 64, 8, 1),
        (16, 128): (16, 64, 8, 1),
        (16, 256): (16, 64, 8, 1),
        (32, 16): (32, 16, 8, 1),
        (32, 32): (32, 32, 8, 1),
        (32, 64): (32, 64, 8, 1),
        (32, 128): (32, 64, 8, 1),
        (32, 256): (32, 64, 8, 1),
        (64, 16): (64, 16, 8, 1),
        (64, 32): (64, 32, 8, 1),
        (64, 64): (64, 64, 8, 1),
        (64, 128): (64, 64, 8, 1),
        (64, 256): (64, 64, 8, 1),
        (128, 16): (64, 16, 8, 1),
        (128, 32): (64, 32, 8, 1),
        (128, 64): (64, 64, 8, 1),
        (128, 128): (64, 64, 8, 1),
        (128, 256): (64, 64, 8, 1),
        (256, 16): (64, 16, 8, 1),
        (256, 32): (64, 32, 8, 1),
        (256, 64): (64, 64, 8, 1),
        (256, 128): (64, 64, 8, 1),
        (256, 256): (64, 64, 8, 1),
    },
    "bwd_dv": {
        (16, 16): (16, 16, 4, 2),
        (16, 32): (16, 32, 4, 2),
        (16, 64): (16, 64, 4, 2),
        (16, 128): (16, 128, 4, 2),
        (16, 256): (16, 128, 4, 2),
        (32, 16): (32, 16, 8, 2),
        (32, 32): (32, 32, 8, 2),
        (32, 64): (32, 64, 8, 2),
        (32, 128): (32, 128, 8, 2),
        (32, 256): (32, 128, 8, 2),
        (64, 16): (64, 16, 4, 2),
        (64, 32): (64, 32, 4, 2),
        (64, 64): (64, 64, 4, 2),
        (64, 128): (64, 128, 4, 2),
        (64, 256): (64, 128, 4, 2),
        (128, 16): (64, 16, 4, 2),
        (128, 32): (64, 32, 4, 2),
        (128, 64): (64, 64, 4, 2),
        (128, 128): (64, 128, 4, 2),
        (128, 256): (64, 128, 4, 2),
        (256, 16): (64, 16, 4, 2),
        (256, 32): (64, 32, 4, 2),
        (256, 64): (64, 64, 4, 2),
        (256, 128): (64, 128, 4, 2),
        (256, 256): (64, 128, 4, 2),
    },
}
_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
# split state pass (see _state_pass_segments): below this many programs per SM, at most this many, segments of at
# least this many chunks, sequences of at least this many; chosen by the planner
STATE_PASS_SPLIT = (0.4, 2.0, 8, 16)
# carried forward (see _carries_states): from this many programs per SM (None: never), up to this K; chosen by the
# planner
CARRIED_FORWARD = (None, 128)
# the Gluon output pass on sm_90 (see _gluon_output_pass): (K, V) -> (BV, num_warps, num_stages), chosen by the
# planner; LINATTN_GEN_GLUON=0 turns it off
GLUON_OUTPUT_PASS = {
    (128, 128): (128, 8, 2),
}
GLUON_OUTPUT_PASS_IN_INFERENCE = False
# the Gluon carried forward on sm_90 (see _gluon_carried_forward): (K, V) -> (num_warps, num_stages); segments for
# up to this many programs per SM, each at least this many chunks, the state pass before it on shorter segments
# below this many programs per SM (see _carried_layout); whether inference / training forwards take it.
# Chosen by the planner
GLUON_CARRIED_FORWARD = {
    (128, 128): (8, 2),
}
GLUON_CARRIED_SEGMENTS = (1.0, 8, 0.0)
GLUON_CARRIED_FORWARD_IN = {"inference": True, "training": True}
# (num_warps, num_stages) of the Gluon state pass before its later segments, or None: chunk_fwd_h_kernel
GLUON_CARRIED_STATE_PASS = (8, 3)
GLUON = os.environ.get("LINATTN_GEN_GLUON", "1") != "0"
# kernel -> (K, V) -> the launch configs timed on a call's first use (see _tuned), the table's first, clipped to the
# head by the planner; on unless LINATTN_GEN_AUTOTUNE=0 when the planner turns it on by default, else only with
# LINATTN_GEN_AUTOTUNE=1
AUTOTUNE_CANDIDATES = {
    "fwd_h": {
        (16, 16): ((16, 16, 4, 3), (16, 16, 4, 2), (16, 16, 8, 2), (16, 16, 8, 3)),
        (16, 32): ((16, 32, 4, 3), (16, 32, 4, 2), (16, 32, 8, 2), (16, 32, 8, 3)),
        (16, 64): ((16, 64, 4, 3), (16, 64, 4, 2), (16, 64, 8, 2), (16, 64, 8, 3), (16, 32, 4, 2)),
        (16, 128): ((16, 128, 4, 3), (16, 128, 4, 2), (16, 64, 4, 3), (16, 128, 8, 2), (16, 128, 8, 3), (16, 32, 4, 2)),
        (16, 256): ((16, 128, 4, 3), (16, 128, 4, 2), (16, 64, 4, 3), (16, 128, 8, 2), (16, 128, 8, 3), (16, 32, 4, 2)),
        (32, 16): ((32, 16, 8, 3), (32, 16, 8, 2)),
        (32, 32): ((32, 32, 8, 3), (32, 32, 8, 2)),
        (32, 64): ((32, 64, 8, 3), (32, 64, 8, 2), (32, 32, 8, 2)),
        (32, 128): ((32, 128, 8, 3), (32, 128, 8, 2), (32, 64, 8, 3), (32, 32, 8, 2)),
        (32, 256): ((32, 128, 8, 3), (32, 128, 8, 2), (32, 64, 8, 3), (32, 32, 8, 2)),
        (64, 16): ((64, 16, 4, 3), (64, 16, 4, 2), (64, 16, 8, 2), (64, 16, 8, 3)),
        (64, 32): ((64, 32, 4, 3), (64, 32, 4, 2), (64, 32, 8, 2), (64, 32, 8, 3)),
        (64, 64): ((64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 8, 2), (64, 64, 8, 3), (64, 32, 4, 2)),
        (64, 128): ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3), (64, 32, 4, 2)),
        (64, 256): ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3), (64, 32, 4, 2)),
        (128, 16): ((64, 16, 4, 3), (64, 16, 4, 2), (64, 16, 8, 2), (128, 16, 8, 3), (128, 16, 8, 2)),
        (128, 32): ((64, 32, 4, 3), (64, 32, 4, 2), (64, 32, 8, 2), (128, 32, 8, 3), (128, 32, 8, 2)),
        (128, 64): ((64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 3), (64, 32, 4, 2), (128, 64, 8, 2)),
        (128, 128): ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 3), (64, 32, 4, 2), (128, 128, 8, 2)),
        (128, 256): ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 3), (64, 32, 4, 2), (128, 128, 8, 2)),
        (256, 16): ((64, 16, 4, 3), (64, 16, 4, 2), (64, 16, 8, 2), (128, 16, 8, 3), (128, 16, 8, 2)),
        (256, 32): ((64, 32, 4, 3), (64, 32, 4, 2), (64, 32, 8, 2), (128, 32, 8, 3), (128, 32, 8, 2)),
        (256, 64): ((64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 3), (64, 32, 4, 2), (128, 64, 8, 2)),
        (256, 128): ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 3), (64, 32, 4, 2), (128, 128, 8, 2)),
        (256, 256): ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 3), (64, 32, 4, 2), (128, 128, 8, 2)),
    },
    "fwd_o": {
        (16, 16): ((16, 16, 4, 2),),
        (16, 32): ((16, 32, 4, 2),),
        (16, 64): ((16, 64, 4, 2),),
        (16, 128): ((16, 128, 4, 2), (16, 64, 4, 2)),
        (16, 256): ((16, 128, 4, 2), (16, 64, 4, 2)),
        (32, 16): ((32, 16, 8, 2),),
        (32, 32): ((32, 32, 8, 2),),
        (32, 64): ((32, 64, 8, 2),),
        (32, 128): ((32, 128, 8, 2), (32, 64, 8, 2)),
        (32, 256): ((32, 128, 8, 2), (32, 64, 8, 2)),
        (64, 16): ((64, 16, 4, 2),),
        (64, 32): ((64, 32, 4, 2),),
        (64, 64): ((64, 64, 4, 2),),
        (64, 128): ((64, 128, 4, 2), (64, 64, 4, 2)),
        (64, 256): ((64, 128, 4, 2), (64, 64, 4, 2)),
        (128, 16): ((128, 16, 4, 2), (64, 16, 4, 2)),
        (128, 32): ((128, 32, 4, 2), (64, 32, 4, 2)),
        (128, 64): ((128, 64, 4, 2), (64, 64, 4, 2)),
        (128, 128): ((128, 128, 4, 2), (64, 128, 4, 2), (64, 64, 4, 2)),
        (128, 256): ((128, 128, 4, 2), (64, 128, 4, 2), (64, 64, 4, 2)),
        (256, 16): ((128, 16, 4, 2), (64, 16, 4, 2)),
        (256, 32): ((128, 32, 4, 2), (64, 32, 4, 2)),
        (256, 64): ((128, 64, 4, 2), (64, 64, 4, 2)),
        (256, 128): ((128, 128, 4, 2), (64, 128, 4, 2), (64, 64, 4, 2)),
        (256, 256): ((128, 128, 4, 2), (64, 128, 4, 2), (64, 64, 4, 2)),
    },
    "bwd_dh": {
        (16, 16): ((16, 16, 4, 3), (16, 16, 8, 2), (16, 16, 4, 2)),
        (16, 32): ((16, 32, 4, 3), (16, 32, 8, 2), (16, 32, 4, 2)),
        (16, 64): ((16, 64, 4, 3), (16, 64, 8, 2), (16, 64, 4, 2), (16, 32, 4, 2)),
        (16, 128): ((16, 128, 4, 3), (16, 128, 8, 2), (16, 128, 4, 2), (16, 64, 4, 3), (16, 32, 4, 2)),
        (16, 256): ((16, 128, 4, 3), (16, 128, 8, 2), (16, 128, 4, 2), (16, 64, 4, 3), (16, 32, 4, 2)),
        (32, 16): ((32, 16, 8, 3), (32, 16, 8, 2)),
        (32, 32): ((32, 32, 8, 3), (32, 32, 8, 2)),
        (32, 64): ((32, 64, 8, 3), (32, 64, 8, 2), (32, 32, 8, 2)),
        (32, 128): ((32, 128, 8, 3), (32, 128, 8, 2), (32, 64, 8, 3), (32, 32, 8, 2)),
        (32, 256): ((32, 128, 8, 3), (32, 128, 8, 2), (32, 64, 8, 3), (32, 32, 8, 2)),
        (64, 16): ((64, 16, 4, 3), (64, 16, 8, 2), (64, 16, 4, 2)),
        (64, 32): ((64, 32, 4, 3), (64, 32, 8, 2), (64, 32, 4, 2)),
        (64, 64): ((64, 64, 4, 3), (64, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)),
        (64, 128): ((64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
        (64, 256): ((64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
        (128, 16): ((64, 16, 4, 3), (64, 16, 8, 2), (64, 16, 4, 2)),
        (128, 32): ((64, 32, 4, 3), (64, 32, 8, 2), (64, 32, 4, 2)),
        (128, 64): ((64, 64, 4, 3), (64, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)),
        (128, 128): ((64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
        (128, 256): ((64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
        (256, 16): ((64, 16, 4, 3), (64, 16, 8, 2), (64, 16, 4, 2)),
        (256, 32): ((64, 32, 4, 3), (64, 32, 8, 2), (64, 32, 4, 2)),
        (256, 64): ((64, 64, 4, 3), (64, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)),
        (256, 128): ((64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
        (256, 256): ((64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2)),
    },
    "bwd_dqkg": {
        (16, 16): ((16, 16, 8, 1), (16, 16, 4, 2), (16, 16, 8, 2)),
        (16, 32): ((16, 32, 8, 1), (16, 32, 4, 2), (16, 32, 8, 2)),
        (16, 64): ((16, 64, 8, 1), (16, 64, 4, 2), (16, 64, 8, 2)),
        (16, 128): ((16, 64, 8, 1), (16, 64, 4, 2), (16, 128, 8, 2), (16, 64, 8, 2)),
        (16, 256): ((16, 64, 8, 1), (16, 64, 4, 2), (16, 128, 8, 2), (16, 64, 8, 2)),
        (32, 16): ((32, 16, 8, 1), (32, 16, 8, 2)),
        (32, 32): ((32, 32, 8, 1), (32, 32, 8, 2)),
        (32, 64): ((32, 64, 8, 1), (32, 64, 8, 2)),
        (32, 128): ((32, 64, 8, 1), (32, 64, 8, 2), (32, 128, 8, 2)),
        (32, 256): ((32, 64, 8, 1), (32, 64, 8, 2), (32, 128, 8, 2)),
        (64, 16): ((64, 16, 8, 1), (64, 16, 4, 2), (64, 16, 8, 2)),
        (64, 32): ((64, 32, 8, 1), (64, 32, 4, 2), (64, 32, 8, 2)),
        (64, 64): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 64, 8, 2)),
        (64, 128): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
        (64, 256): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
        (128, 16): ((64, 16, 8, 1), (64, 16, 4, 2), (64, 16, 8, 2)),
        (128, 32): ((64, 32, 8, 1), (64, 32, 4, 2), (64, 32, 8, 2)),
        (128, 64): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 64, 8, 2)),
        (128, 128): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
        (128, 256): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
        (256, 16): ((64, 16, 8, 1), (64, 16, 4, 2), (64, 16, 8, 2)),
        (256, 32): ((64, 32, 8, 1), (64, 32, 4, 2), (64, 32, 8, 2)),
        (256, 64): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 64, 8, 2)),
        (256, 128): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
        (256, 256): ((64, 64, 8, 1), (64, 64, 4, 2), (64, 128, 8, 2), (64, 64, 8, 2)),
    },
    "bwd_dv": {
        (16, 16): ((16, 16, 4, 2), (16, 16, 4, 3), (16, 16, 8, 2)),
        (16, 32): ((16, 32, 4, 2), (16, 32, 4, 3), (16, 32, 8, 2)),
        (16, 64): ((16, 64, 4, 2), (16, 64, 4, 3), (16, 64, 8, 2)),
        (16, 128): ((16, 128, 4, 2), (16, 64, 4, 3), (16, 128, 8, 2)),
        (16, 256): ((16, 128, 4, 2), (16, 64, 4, 3), (16, 128, 8, 2)),
        (32, 16): ((32, 16, 8, 2), (32, 16, 8, 3)),
        (32, 32): ((32, 32, 8, 2), (32, 32, 8, 3)),
        (32, 64): ((32, 64, 8, 2), (32, 64, 8, 3)),
        (32, 128): ((32, 128, 8, 2), (32, 64, 8, 3)),
        (32, 256): ((32, 128, 8, 2), (32, 64, 8, 3)),
        (64, 16): ((64, 16, 4, 2), (64, 16, 4, 3), (64, 16, 8, 2)),
        (64, 32): ((64, 32, 4, 2), (64, 32, 4, 3), (64, 32, 8, 2)),
        (64, 64): ((64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 8, 2)),
        (64, 128): ((64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2)),
        (64, 256): ((64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2)),
        (128, 16): ((64, 16, 4, 2), (64, 16, 4, 3), (64, 16, 8, 2), (128, 16, 8, 2)),
        (128, 32): ((64, 32, 4, 2), (64, 32, 4, 3), (64, 32, 8, 2), (128, 32, 8, 2)),
        (128, 64): ((64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 8, 2), (128, 64, 8, 2)),
        (128, 128): ((64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 2)),
        (128, 256): ((64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 2)),
        (256, 16): ((64, 16, 4, 2), (64, 16, 4, 3), (64, 16, 8, 2), (128, 16, 8, 2)),
        (256, 32): ((64, 32, 4, 2), (64, 32, 4, 3), (64, 32, 8, 2), (128, 32, 8, 2)),
        (256, 64): ((64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 8, 2), (128, 64, 8, 2)),
        (256, 128): ((64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 2)),
        (256, 256): ((64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 128, 8, 2)),
    },
}
# kernel -> {(BK, BV, num_warps, num_stages): registers}: launches that run with ptxas' registers per thread capped
# (Triton's maxnreg), chosen by the planner; every other launch runs uncapped
REGISTER_CAPS = {
}
AUTOTUNE = os.environ.get("LINATTN_GEN_AUTOTUNE", "1") == "1"
TUNING_ROUNDS = 2  # interleaved timing rounds per candidate (see _tuned)


def _check_tensors(*named):
    """(name, value) pairs that must be tensors of a float dtype: the kernels' operands, and the inputs that derived
    operands are computed from (before any arithmetic on them)."""
    for name, x in named:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, bfloat16 or float16, got {x.dtype}")


def operands(q, k, v, w, u):
    """The kernels' operands (q, k, v, w) from the op's inputs (q, k, v, w, u)."""
    return q, k, v, w


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def _check_inputs(q, k, v, w, initial_state, cu_seqlens):
    """Validate the call; every message names the argument with its expected and actual shape/dtype/device."""
    named = (("q", q), ("k", k), ("v", v), ("w", w))
    _check_tensors(*named)
    for name, x in named:
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}")
    if q.dim() != 4:
        raise ValueError(f"q must be [B, T, H, K], got {_describe(q)}")
    B, T, HK, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)} [B, T, H, K], got {_describe(k)}")
    if v.dim() != 4 or v.shape[:2] != (B, T) or v.shape[2] % HK != 0:
        raise ValueError(f"v must be [B, T, H, V] with H a multiple of q's {HK} heads (grouped heads share "
                         f"q, k and gates), B = {B}, T = {T}; got {_describe(v)}")
    H, V = v.shape[2:]
    expected = (B, T, HK, K)
    if tuple(w.shape) != expected:
        raise ValueError(f"gate w must be [B, T, HK, K] (HK: q's heads) = {list(expected)}, got {_describe(w)}")
    if (K, V) not in LAUNCH["fwd_o"]:
        raise ValueError(f"head sizes K={K}, V={V} are not supported; K and V must be powers of two from 16 to 256")
    if T < 1:
        raise ValueError(f"sequence length T must be >= 1, got {_describe(q)}")
    states, N = "B", B
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"cu_seqlens must be int32 or int64, got {_describe(cu_seqlens)}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(f"cu_seqlens must be 1-D [N + 1] with N >= 1 sequences, got {_describe(cu_seqlens)}")
        if B != 1:
            raise ValueError(f"with cu_seqlens, the batch size must be 1 (sequences packed along T), got {_describe(q)}")
        states, N = "N", cu_seqlens.numel() - 1
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(f"initial_state must be a torch.Tensor, got {type(initial_state).__name__}")
        if tuple(initial_state.shape) != (N, H, _state_rows(K), V):
            raise ValueError(f"initial_state must be [{states}, H, K, V] = {[N, H, _state_rows(K), V]}, got "
                             f"{_describe(initial_state)}")
        if initial_state.device != q.device or not initial_state.is_floating_point():
            raise ValueError(f"initial_state must be a float tensor on {q.device}, got {_describe(initial_state)}")
    return B, T, H, K, V


def _packed_layout(cu_seqlens, T, device):
    """(cu_seqlens, chunk_indices, chunk_offsets) on `device` for a packed batch, or three Nones without one.

    chunk_indices[c] = (sequence, chunk within it) for every chunk c of the batch, in order; chunk_offsets[n] is the
    index of sequence n's first chunk. Both come from a host copy of the offsets: when the caller passes cu_seqlens
    on the CPU, nothing here waits for the device (a device tensor is copied back once, which does).
    """
    if cu_seqlens is None:
        return None, None, None
    offsets = cu_seqlens.to("cpu", torch.int64)
    if int(offsets[0]) != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {offsets[:4].tolist()}...")
    if int(offsets[-1]) != T:
        raise ValueError(f"cu_seqlens must end at T = {T} (the packed length), got {int(offsets[-1])}")
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths < 0).any()):
        n = int((lengths < 0).nonzero()[0])
        raise ValueError(f"cu_seqlens must be non-decreasing, but cu_seqlens[{n + 1}] = {int(offsets[n + 1])} < "
                         f"cu_seqlens[{n}] = {int(offsets[n])}")
    chunks = (lengths + CHUNK_SIZE - 1) // CHUNK_SIZE
    chunk_offsets = torch.cat([chunks.new_zeros(1), chunks.cumsum(0)])
    sequence = torch.repeat_interleave(torch.arange(len(chunks)), chunks)
    chunk_indices = torch.stack([sequence, torch.arange(len(sequence)) - chunk_offsets[sequence]], 1)
    host = [offsets, chunk_indices, chunk_offsets]
    if torch.device(device).type == "cuda":
        host = [x.pin_memory() for x in host]  # so that the copies below are asynchronous
    return tuple(x.to(device=device, dtype=torch.int32, non_blocking=True) for x in host)


def _prepare(q, k, v, w, scale, initial_state, cu_seqlens):
    """Validate a call; return contiguous inputs (q, k, v in q's dtype), the resolved scale, initial state and
    packed-batch layout (see _packed_layout)."""
    B, T, *_ = _check_inputs(q, k, v, w, initial_state, cu_seqlens)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    dtype = q.dtype
    tensors = [x.to(dtype).contiguous() for x in (q, k, v)]
    tensors.append(w.contiguous())
    layout = _packed_layout(cu_seqlens, T, q.device)
    return tensors, scale, None if initial_state is None else initial_state.contiguous(), layout


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) on the host: triton.cdiv is a constexpr function, about 1-2 us a call from Python (Triton 3.6),
    and a forward+backward makes about ten."""
    return -(-a // b)


def _next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), as triton.next_power_of_2 but without its constexpr-call cost."""
    return 1 << (n - 1).bit_length()


def _sizes(q, v):
    """B, T, H (value heads, which own the states), HK (query/key heads, H // HK value heads share each), K, V."""
    B, T, HK, K = q.shape
    return B, T, v.shape[2], HK, K, v.shape[3]


def _state_rows(K: int) -> int:
    """Rows of a state: the key size K."""
    return K


def _launch(kernel: str, K: int, V: int):
    return LAUNCH[kernel][(K, V)]


@functools.lru_cache(maxsize=None)
def _is_sm90(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) == (9, 0)


def _gluon_takes(*, on_sm90: bool, dtypes: tuple, contiguous: bool, T: int, packed: bool) -> bool:
    """Whether a Gluon kernel can take a call at all: not on GPUs other than sm_90 (the kernels are written for
    Hopper's warpgroup MMA), packed batches or lengths that are not a multiple of the chunk (their TMA tiles are
    whole chunks), nor 32-bit inputs or gates of another dtype."""
    return (on_sm90 and not packed and T % CHUNK_SIZE == 0 and contiguous
            and dtypes[0] in (torch.bfloat16, torch.float16) and all(dtype == dtypes[0] for dtype in dtypes))


def _gluon_call(tensors: tuple):
    """The arguments of _gluon_takes that this call's tensors give (on_sm90, dtypes, contiguous); None off the GPU,
    under the interpreter and with LINATTN_GEN_GLUON=0."""
    device = tensors[0].device
    if not GLUON or device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return dict(on_sm90=_is_sm90(device.index if device.index is not None else torch.cuda.current_device()),
                dtypes=tuple(x.dtype for x in tensors), contiguous=all(x.is_contiguous() for x in tensors))


def _gluon_output_pass_rule(*, on_sm90: bool, dtypes: tuple, contiguous: bool, T: int, K: int, V: int, packed: bool,
                            need_states: bool):
    """(BV, num_warps, num_stages) of the Gluon output pass, or None where chunk_fwd_o_kernel runs: where no Gluon
    kernel can (_gluon_takes), for head shapes it was not measured at, and in inference unless the planner says
    otherwise (GLUON_OUTPUT_PASS_IN_INFERENCE: a forward alone is host-bound at these sizes, and this pass takes the
    host longer to issue)."""
    if not _gluon_takes(on_sm90=on_sm90, dtypes=dtypes, contiguous=contiguous, T=T, packed=packed):
        return None
    if (K, V) not in GLUON_OUTPUT_PASS or not (need_states or GLUON_OUTPUT_PASS_IN_INFERENCE):
        return None
    return GLUON_OUTPUT_PASS[(K, V)]


def _gluon_output_pass(q, k, v, g, h, T: int, K: int, V: int, cu_seqlens, need_states: bool):
    """_gluon_output_pass_rule for this call's tensors; None where _gluon_call is, and where the Gluon module does
    not import (another Triton)."""
    call = _gluon_call((q, k, v, g, h))
    if call is None:
        return None
    config = _gluon_output_pass_rule(**call, T=T, K=K, V=V, packed=cu_seqlens is not None, need_states=need_states)
    return config if config is not None and _gluon_kernels() is not None else None




def _gluon_carried_forward_rule(*, on_sm90: bool, dtypes: tuple, contiguous: bool, T: int, K: int, V: int,
                                packed: bool, need_states: bool, sequence_parallel: bool):
    """(num_warps, num_stages) of the Gluon carried forward, or None where the two passes run: where no Gluon kernel
    can (_gluon_takes), for head shapes it was not built for, where the planner keeps it from inference or training
    forwards (GLUON_CARRIED_FORWARD_IN), and under sequence parallelism (whose collective starts between the two
    passes)."""
    if not _gluon_takes(on_sm90=on_sm90, dtypes=dtypes, contiguous=contiguous, T=T, packed=packed):
        return None
    if sequence_parallel or (K, V) not in GLUON_CARRIED_FORWARD:
        return None
    if not GLUON_CARRIED_FORWARD_IN["training" if need_states else "inference"]:
        return None
    return GLUON_CARRIED_FORWARD[(K, V)]


def _gluon_carried_forward(q, k, v, g, T: int, K: int, V: int, cu_seqlens, need_states: bool, after_states):
    """_gluon_carried_forward_rule for this call's tensors; None where _gluon_output_pass is."""
    call = _gluon_call((q, k, v, g))
    if call is None:
        return None
    config = _gluon_carried_forward_rule(**call, T=T, K=K, V=V, packed=cu_seqlens is not None,
                                         need_states=need_states, sequence_parallel=after_states is not None)
    return config if config is not None and _gluon_kernels() is not None else None


def _carried_segments(N: int, H: int, NT: int, sms: int) -> int:
    """Segments per sequence for the Gluon carried forward: enough that its N * H * segments programs fill up to
    GLUON_CARRIED_SEGMENTS' programs per SM, none shorter than its minimum chunks."""
    per_sm, min_chunks, _ = GLUON_CARRIED_SEGMENTS
    return max(1, min(int(per_sm * sms) // (N * H), NT // min_chunks))


def _carried_layout(N: int, H: int, NT: int, K: int, V: int, sms: int) -> tuple:
    """(SEG, NS, step): the Gluon carried forward's segments of SEG chunks, NS per sequence, each made of `step`
    segments of the state pass before it. That pass walks its chunks in turn, so where its programs would not reach
    GLUON_CARRIED_SEGMENTS' programs per SM it runs on shorter segments, and the scan after it takes more steps
    (the planner gives the Triton pass 1.5 programs per SM, the Gluon one 0: never split)."""
    _, min_chunks, state_per_sm = GLUON_CARRIED_SEGMENTS
    SEG = _cdiv(NT, _carried_segments(N, H, NT, sms))
    NS = _cdiv(NT, SEG)
    if NS == 1:
        return NT, 1, 1
    # no program for each sequence's last segment; the Gluon state pass has one per segment and head
    BK = K if GLUON_CARRIED_STATE_PASS is not None else _launch("fwd_h", K, V)[0]
    programs = N * H * _cdiv(K, BK) * (NS - 1)
    step = max(1, min(_cdiv(int(state_per_sm * sms), programs), SEG // min_chunks))
    SEG = _cdiv(SEG, step) * step
    return SEG, _cdiv(NT, SEG), step


def _carried_gluon_fwd(q, k, v, decay, o, scale, initial_state, output_final_state, need_states, dtype_name,
                       warps, stages):
    """The Gluon carried forward into o; returns (h, final_state, span_flag). h holds every chunk's entering state
    with need_states, else only those of the chunks flagged in span_flag (whose outputs are to be redone). Over
    several segments the states entering them come first (_segment_entering_states)."""
    B, T, H, HK, K, V = _sizes(q, v)
    NT = T // CHUNK_SIZE
    device = q.device
    SEG, NS, step = _carried_layout(B, H, NT, K, V, _multiprocessors(device))
    h = q.new_empty(B, NT, H, K, V)
    final_state = q.new_empty(B, H, K, V, dtype=torch.float32) if output_final_state else None
    span_flag = torch.empty(B * NT * H, device=device, dtype=torch.int32)
    entering, entering_segments = initial_state, 1
    if NS > 1:
        entering_segments = _cdiv(NT, SEG // step)
        entering = _segment_entering_states(k, v, decay, initial_state, T, NT, SEG // step, entering_segments,
                                            (NS - 1) * step, dtype_name, GLUON_CARRIED_STATE_PASS)
    _gluon_kernels().chunk_fwd_carried_gluon(q, k, v, decay, o, h, entering, final_state, span_flag, scale,
                                             CHUNK_SIZE, SPAN_LIMIT[dtype_name], SEG, NS, need_states, warps, stages,
                                             entering_segments, step)
    return h, final_state, span_flag


def _segment_entering_states(k, v, decay, initial_state, T, NT, SEG, NS, used, dtype_name, gluon_state_pass=None):
    """The state entering each of a dense batch's NS segments of SEG chunks, [B * NS, H, K, V] fp32, of which the
    first used + 1 per sequence are right (the later ones are not needed): the state pass over the first `used`
    from zero states, storing their end states and total log decays but no chunk states (chunk_fwd_h_kernel, or
    with gluon_state_pass = (num_warps, num_stages) its Gluon counterpart), then segment_scan_kernel."""
    B, _, HK, K = k.shape
    H, V = v.shape[2], v.shape[3]
    device = k.device
    segment_seqlens, segment_offsets = _segments_of(B, T, NT, SEG, device)
    # rows of each sequence's last segment stay unwritten: no later segment starts from its end
    ends = torch.empty(B * NS, H, K, V, dtype=torch.float32, device=device)
    totals = torch.empty(B * NS, H, K, dtype=torch.float32, device=device)

    def fwd_h(BK, BV, warps, stages):
        chunk_fwd_h_kernel[(_cdiv(K, BK), _cdiv(V, BV), B * NS * H)](
            k, v, decay, None, None, ends, totals, segment_seqlens, segment_offsets, T, NT, H=H, HK=HK, K=K,
            V=V, BT=CHUNK_SIZE, BK=BK, BV=BV, USE_INITIAL_STATE=False, STORE_FINAL_STATE=True,
            STORE_CHUNK_DECAY=False, IS_VARLEN=True, DOT_PRECISION=DOT_PRECISION[dtype_name], STORE_STATES=False,
            STORE_TOTAL_DECAY=True, SEGMENTS=NS, SEGMENTS_USED=used, num_warps=warps, num_stages=stages,
            maxnreg=_registers("fwd_h", BK, BV, warps, stages),
        )

    if gluon_state_pass is not None:
        _gluon_kernels().chunk_segment_ends_gluon(k, v, decay, ends, totals, CHUNK_SIZE, SEG, NS, used,
                                                  *gluon_state_pass)
    else:
        _run_tuned("fwd_h", K, V, (B * NS * H, SEG), dtype_name, device, fwd_h)
    entering = torch.empty(B * NS, H, K, V, dtype=torch.float32, device=device)
    BK, BV, scan_warps, _ = _launch("segment_scan", K, V)
    # final: read as the walk's start where there is an initial state, never written
    segment_scan_kernel[(_cdiv(K, BK), _cdiv(V, BV), B * H)](
        ends, totals, entering, ends if initial_state is None else initial_state, NS, H=H, K=K, V=V, KD=K, BK=BK,
        BV=BV, USE_FIRST=initial_state is not None, HAS_DECAY=True, REVERSE=False, ENTERING_ONLY=True,
        num_warps=scan_warps,
    )
    return entering


@functools.lru_cache(maxsize=None)
def _gluon_kernels():
    """The generated Gluon module, or None (with a warning, once) where this Triton cannot import it: Gluon is
    experimental, and its Hopper API may move between Triton versions."""
    try:
        from . import gluon_kernels
    except (ImportError, AttributeError) as err:
        warnings.warn(f"linattn_gen: the Gluon output pass is off ({type(err).__name__}: {err}); the Triton kernel "
                      "runs instead", RuntimeWarning, stacklevel=3)
        return None
    return gluon_kernels


def _registers(kernel: str, BK: int, BV: int, warps: int, stages: int):
    """The register cap (maxnreg) of one launch, None where the planner set none."""
    return REGISTER_CAPS.get(kernel, {}).get((BK, BV, warps, stages))


def _run_tuned(kernel: str, K: int, V: int, programs_and_chunks: tuple, dtype_name: str, device, run):
    """run(*config) with the launch config _tuned chooses, fitted to the GPU's shared memory (_fitted); returns what
    run returns."""
    return _fitted(kernel, _tuned(kernel, K, V, programs_and_chunks, dtype_name, device, run), dtype_name, run)


_FITTED_STAGES: dict = {}  # (kernel, config, dtype name) -> the pipeline stages that fit, where fewer than asked
LAST_LAUNCH: dict = {}  # kernel -> the (BK, BV, num_warps, num_stages) of its latest launch (the bench reports it)


def _fitted(kernel: str, config: tuple, dtype_name: str, run):
    """run(*config), or where the GPU's shared memory cannot hold the config's pipeline stages, the same config with
    fewer stages, remembered for later calls. Triton raises OutOfResources before launching anything: the 2-D gate's
    float32 fwd_h at 3 stages asked an H200 for 288 KiB of its 227 (run 10); a smaller GPU refuses more."""
    key = (kernel, tuple(config), dtype_name)
    BK, BV, warps, stages = config
    stages = _FITTED_STAGES.get(key, stages)
    while True:
        try:
            result = run(BK, BV, warps, stages)
            LAST_LAUNCH[kernel] = (BK, BV, warps, stages)
            return result
        except OutOfResources:
            if stages <= 1:
                raise
            stages -= 1
            _FITTED_STAGES[key] = stages


def _tuned(kernel: str, K: int, V: int, programs_and_chunks: tuple, dtype_name: str, device, run):
    """The launch config for one call of `kernel`: the table's (see _launch) unless tuning is on for a CUDA call
    outside graph capture; then the fastest of AUTOTUNE_CANDIDATES, timed by running `run(*config)` once per
    (kernel, K, V, programs, chunks rounded up to a power of two, dtype, GPU) and kept on disk (see _tuning_file).
    Each candidate is timed in TUNING_ROUNDS interleaved rounds and keeps its best median, so that one round's
    noise, or a GPU still raising its clocks when the first candidate runs, does not decide the choice."""
    default = _launch(kernel, K, V)
    if not AUTOTUNE or device.type != "cuda" or kernel not in AUTOTUNE_CANDIDATES or torch.cuda.is_current_stream_capturing():
        return default
    programs, chunks = programs_and_chunks
    key = f"{kernel} K={K} V={V} programs={programs} chunks<={_next_power_of_2(chunks)} {dtype_name} {torch.cuda.get_device_name(device)}"
    tuned = _tuning_table()
    if key not in tuned:
        from triton.testing import do_bench

        candidates = AUTOTUNE_CANDIDATES[kernel][(K, V)]  # the table's config first
        times = [float("inf")] * len(candidates)
        skipped = set()  # candidates that failed to run: not timed again, never chosen
        for _ in range(TUNING_ROUNDS):
            # the table's must run
            times[0] = min(times[0], do_bench(lambda: _fitted(kernel, default, dtype_name, run), warmup=1, rep=5,
                                              return_mode="median"))
            for i, config in enumerate(candidates[1:], start=1):
                if i in skipped:
                    continue
                try:
                    times[i] = min(times[i], do_bench(lambda c=config: run(*c), warmup=1, rep=5, return_mode="median"))
                except Exception as err:  # noqa: BLE001 - e.g. OutOfResources: a candidate this GPU cannot compile
                    warnings.warn(f"{kernel}: launch config {config} skipped in tuning ({type(err).__name__}: {err})",
                                  stacklevel=2)
                    skipped.add(i)
        tuned[key] = candidates[times.index(min(times))]
        _save_tuning(key, tuned[key])
    return tuple(tuned[key])


def _tuning_file():
    """One JSON file per spec and generator build, beside the compile cache: $LINATTN_GEN_CACHE, else
    $XDG_CACHE_HOME/linattn_gen, else ~/.cache/linattn_gen."""
    root = os.environ.get("LINATTN_GEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "linattn_gen")
    return os.path.join(root, "tuning-rwkv6-3d97625cd6463310-0.1.0.json")


@functools.lru_cache(maxsize=None)
def _tuning_table() -> dict:
    try:
        with open(_tuning_file()) as f:
            return {key: tuple(config) for key, config in json.load(f).items()}
    except (OSError, ValueError):
        return {}


def _save_tuning(key, config):
    """Merge one result into the file; written to a temporary file and renamed, so a reader never sees half of it."""
    path = _tuning_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    table[key] = list(config)
    fd, staging = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(table, f, indent=1)
    os.replace(staging, path)


def _decay_input(q, v, w):
    return w


def _state_pass_segments(N, H, K, V, NT, kernel, device) -> int:
    """Segments per sequence for the state pass `kernel` (1: one program walks the whole sequence). Split only when
    its (sequence, head, K block, V block) programs would leave most SMs idle; see STATE_PASS_SPLIT."""
    if device.type != "cuda":
        return 1
    BK, BV, _, _ = _launch(kernel, K, V)
    programs = N * H * _cdiv(K, BK) * _cdiv(V, BV)
    below, target, min_chunks, min_sequence_chunks = STATE_PASS_SPLIT
    sms = _multiprocessors(device)
    if programs >= below * sms or NT < max(2 * min_chunks, min_sequence_chunks):
        return 1
    # at most target x SMs programs: the state passes run two blocks per SM, and programs past one wave would run
    # after it, each walking a whole segment (32 programs cut in 9 took 0.165 ms in H200 run 11, in 8 about 0.10)
    return min(int(target * sms) // programs, NT // min_chunks)


def _carries_states(N, H, K, V, device) -> bool:
    """Whether the forward runs chunk_fwd_carried_kernel: one program per (sequence, head, V block) walks the chunks
    with the state in registers; see CARRIED_FORWARD."""
    min_programs_per_sm, max_key_size = CARRIED_FORWARD
    if device.type != "cuda" or min_programs_per_sm is None or K > max_key_size:
        return False
    _, BV, _, _ = _launch("fwd_carried", K, V)
    return N * H * _cdiv(V, BV) >= min_programs_per_sm * _multiprocessors(device)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _chunk_decay_width(K: int) -> int:
    """Columns of a chunk's total log decay: one per key row, one per head, or none (no decay)."""
    return K


def _segment_layout(B: int, T: int, NT: int, segments: int, device: torch.device):
    """A dense batch's sequences cut into chunk-aligned segments, as a packed batch over the [B * T] rows: (chunks per
    segment, segments per sequence, cu_seqlens of the segments, chunk_offsets of the segments)."""
    SEG = _cdiv(NT, segments)
    return (SEG, _cdiv(NT, SEG), *_segments_of(B, T, NT, SEG, device))


@functools.lru_cache(maxsize=64)
def _segments_of(B: int, T: int, NT: int, SEG: int, device: torch.device):
    """_segment_layout's cu_seqlens and chunk_offsets for segments of SEG chunks."""
    NS = _cdiv(NT, SEG)
    starts = [b * T + s * SEG * CHUNK_SIZE for b in range(B) for s in range(NS)] + [B * T]
    first_chunks = [b * NT + s * SEG for b in range(B) for s in range(NS)] + [B * NT]
    host = [torch.tensor(starts, dtype=torch.int32), torch.tensor(first_chunks, dtype=torch.int32)]
    if device.type == "cuda":
        host = [x.pin_memory() for x in host]
    return tuple(x.to(device, non_blocking=True) for x in host)


def _segment_decays(chunk_log_decay, B, NT, SEG, NS, H):
    """From each chunk's total log decay [B * NT, H, W]: each segment's total [B, NS, H, W], and per chunk the log
    decay from its segment's start to the chunk's start, and from the chunk's end to its segment's end [B * NT, H, W].
    All None without a decay."""
    if chunk_log_decay is None:
        return None, None, None
    W = chunk_log_decay.shape[-1]
    per_chunk = torch.nn.functional.pad(chunk_log_decay.view(B, NT, H, W), (0, 0, 0, 0, 0, NS * SEG - NT))
    per_chunk = per_chunk.view(B, NS, SEG, H, W)
    through = per_chunk.cumsum(2)
    total = through[:, :, -1]

    def per_chunk_rows(x):
        return x.reshape(B, NS * SEG, H, W)[:, :NT].reshape(B * NT, H, W)

    return total.contiguous(), per_chunk_rows(through - per_chunk), per_chunk_rows(total[:, :, None] - through)


def _split_fwd_h(k, v, decay, h, initial_state, final_state, T, NT, segments, dtype_name):
    """chunk_fwd_h_kernel over segments: each runs from a zero state (a packed batch of segments), a scan gives the
    state entering each segment, and a fold adds its decayed contribution to every chunk's state."""
    B, _, H, K, V = h.shape
    HK = k.shape[2]
    SEG, NS, cu_seqlens, chunk_offsets = _segment_layout(B, T, NT, segments, k.device)
    ends = torch.empty(B * NS, H, K, V, dtype=torch.float32, device=k.device)
    width = _chunk_decay_width(K)
    chunk_log_decay = torch.empty(B * NT, H, width, dtype=torch.float32, device=k.device) if width else None

    def fwd_h(BK, BV, warps, stages):
        chunk_fwd_h_kernel[(_cdiv(K, BK), _cdiv(V, BV), B * NS * H)](
            k, v, decay, h, None, ends, chunk_log_decay, cu_seqlens, chunk_offsets, T, NT, H=H, HK=HK, K=K, V=V,
            BT=CHUNK_SIZE, BK=BK, BV=BV, USE_INITIAL_STATE=False, STORE_FINAL_STATE=True,
            STORE_CHUNK_DECAY=chunk_log_decay is not None, IS_VARLEN=True, DOT_PRECISION=DOT_PRECISION[dtype_name],
STORE_STATES=True, STORE_TOTAL_DECAY=False, SEGMENTS=0, SEGMENTS_USED=0, num_warps=warps, num_stages=stages,
            maxnreg=_registers("fwd_h", BK, BV, warps, stages),
        )

    _fitted("fwd_h", _launch("fwd_h", K, V), dtype_name, fwd_h)
    total, into_chunk, _ = _segment_decays(chunk_log_decay, B, NT, SEG, NS, H)
    entering = torch.empty(B, NS, H, K, V, dtype=torch.float32, device=k.device)
    state = (initial_state.to(torch.float32, copy=True) if initial_state is not None
             else torch.empty(B, H, K, V, dtype=torch.float32, device=k.device))
    _scan_and_fold(ends, total, entering, state, h, into_chunk, NT, SEG, NS, initial_state is not None, reverse=False)
    if final_state is not None:
        final_state.copy_(state)


def _split_bwd_dh(q, decay, do, dh, dht, dh0, scale, T, NT, segments, dtype_name):
    """chunk_bwd_dh_kernel over segments, the mirror of _split_fwd_h: each segment from a zero gradient at its end,
    a reverse scan of the gradients of the states entering them, a fold into every chunk's state gradient."""
    B, _, H, K, V = dh.shape
    HK = q.shape[2]
    SEG, NS, cu_seqlens, chunk_offsets = _segment_layout(B, T, NT, segments, q.device)
    local_dh0 = torch.empty(B * NS, H, K, V, dtype=torch.float32, device=q.device)
    width = _chunk_decay_width(K)
    chunk_log_decay = torch.empty(B * NT, H, width, dtype=torch.float32, device=q.device) if width else None

    def bwd_dh(BK, BV, warps, stages):
        chunk_bwd_dh_kernel[(_cdiv(K, BK), _cdiv(V, BV), B * NS * H)](
            q, decay, do, dh, None, local_dh0, chunk_log_decay, cu_seqlens, chunk_offsets, scale, T, NT, H=H, HK=HK,
            K=K, V=V, BT=CHUNK_SIZE, BK=BK, BV=BV, USE_FINAL_STATE_GRADIENT=False, STORE_INITIAL_STATE_GRADIENT=True,
            STORE_CHUNK_DECAY=chunk_log_decay is not None, IS_VARLEN=True, DOT_PRECISION=DOT_PRECISION[dtype_name],
            num_warps=warps, num_stages=stages,
            maxnreg=_registers("bwd_dh", BK, BV, warps, stages),
        )

    _fitted("bwd_dh", _launch("bwd_dh", K, V), dtype_name, bwd_dh)
    total, _, out_of_chunk = _segment_decays(chunk_log_decay, B, NT, SEG, NS, H)
    leaving = torch.empty(B, NS, H, K, V, dtype=torch.float32, device=q.device)
    grad = (dht.to(torch.float32, copy=True) if dht is not None
            else torch.empty(B, H, K, V, dtype=torch.float32, device=q.device))
    _scan_and_fold(local_dh0, total, leaving, grad, dh, out_of_chunk, NT, SEG, NS, dht is not None, reverse=True)
    if dh0 is not None:
        dh0.copy_(grad)


def _scan_and_fold(per_segment, segment_log_decay, boundary, carried, states, fold_log_decay, NT, SEG, NS, use_carried,
                   reverse):
    B, _, H, K, V = states.shape
    width = 0 if segment_log_decay is None else segment_log_decay.shape[-1]
    BK, BV, warps, _ = _launch("segment_scan", K, V)
    segment_scan_kernel[(_cdiv(K, BK), _cdiv(V, BV), B * H)](
        per_segment, segment_log_decay, boundary, carried, NS, H=H, K=K, V=V, KD=max(width, 1), BK=BK, BV=BV,
        USE_FIRST=use_carried, HAS_DECAY=width > 0, REVERSE=reverse, ENTERING_ONLY=False, num_warps=warps,
    )
    BK, BV, warps, _ = _launch("fold_states", K, V)
    fold_segment_states_kernel[(_cdiv(K, BK) * _cdiv(V, BV), NT, B * H)](
        states, boundary, fold_log_decay, NT, SEG, NS, H=H, K=K, V=V, KD=max(width, 1), BK=BK, BV=BV,
        HAS_DECAY=width > 0, num_warps=warps,
    )


def chunk_fwd(q, k, v, w, scale, initial_state, output_final_state, cu_seqlens, chunk_indices, chunk_offsets,
              after_states=None, need_states=True):
    """Forward kernels: the state pass (every chunk's entering state and the final state), then the output pass.
    after_states(final_state), if given, is called between the two, once the state pass is queued (sequence
    parallelism starts its collective there, so that it runs while the output pass computes). Where the planner's
    rule says so, one carried pass replaces both (chunk_fwd_carried_kernel, or on Hopper the Gluon carried forward,
    see _carried_gluon_fwd); with need_states=False (nothing saved for a backward) it writes no chunk states and
    returns None for them."""
    B, T, H, HK, K, V = _sizes(q, v)
    BT = CHUNK_SIZE
    # chunks per sequence (all sequences' chunks of a packed batch, B = 1) and the number of sequences
    NT = _cdiv(T, BT) if cu_seqlens is None else chunk_indices.shape[0]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    dtype_name = _DTYPES[q.dtype]
    decay = _decay_input(q, v, w)
    # the output pass, run once the chunk states are in h
    o = torch.empty_like(v)

    def fwd_o(BK, BV, warps, stages, span_flag=None):
        chunk_fwd_o_kernel[(_cdiv(V, BV), NT, B * H)](
            q, k, v, decay, h, o, cu_seqlens, chunk_indices, scale, T, NT, H=H, HK=HK, K=K, V=V,
            BT=BT, BC=SUB_CHUNK_SIZE, BK=BK, BV=BV, IS_VARLEN=cu_seqlens is not None, SPAN_LIMIT=SPAN_LIMIT[dtype_name],
            DOT_PRECISION=DOT_PRECISION[dtype_name], span_flag=span_flag, FLAGGED_ONLY=span_flag is not None, num_warps=warps, num_stages=stages,
            maxnreg=_registers("fwd_o", BK, BV, warps, stages),
        )
    if after_states is None and _carries_states(N, H, K, V, q.device):
        h = q.new_empty(B, NT, H, K, V) if need_states else None
        final_state = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
        BK, BV, warps, stages = _launch("fwd_carried", K, V)
        chunk_fwd_carried_kernel[(_cdiv(V, BV), N * H)](
            q, k, v, decay, o, h, initial_state, final_state, cu_seqlens, chunk_offsets, scale, T, NT,
            H=H, HK=HK, K=K, V=V, BT=BT, BC=SUB_CHUNK_SIZE, BK=BK, BV=BV, USE_INITIAL_STATE=initial_state is not None,
            STORE_FINAL_STATE=output_final_state, STORE_STATES=need_states, IS_VARLEN=cu_seqlens is not None,
            SPAN_LIMIT=SPAN_LIMIT[dtype_name], DOT_PRECISION=DOT_PRECISION[dtype_name], num_warps=warps,
            num_stages=stages,
            maxnreg=_registers("fwd_carried", BK, BV, warps, stages),
        )
        return o, h, final_state
    carried_config = _gluon_carried_forward(q, k, v, decay, T, K, V, cu_seqlens, need_states, after_states)
    if carried_config is not None:
        h, final_state, span_flag = _carried_gluon_fwd(q, k, v, decay, o, scale, initial_state,
                                                       output_final_state, need_states, dtype_name, *carried_config)
        # the chunks past its span limit, redone by the sub-chunk path from the entering states it wrote for them
        fwd_o(*_launch("fwd_o", K, V), span_flag=span_flag)
        return o, h if need_states else None, final_state
    # the state entering every chunk, in the input dtype (fp32 inside the kernels)
    h = q.new_empty(B, NT, H, K, V)
    final_state = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
    segments = 1 if cu_seqlens is not None else _state_pass_segments(N, H, K, V, NT, "fwd_h", q.device)
    if segments > 1:
        _split_fwd_h(k, v, decay, h, initial_state, final_state, T, NT, segments, dtype_name)
    else:
        def fwd_h(BK, BV, warps, stages):
            chunk_fwd_h_kernel[(_cdiv(K, BK), _cdiv(V, BV), N * H)](
                k, v, decay, h, initial_state, final_state, None, cu_seqlens, chunk_offsets, T, NT, H=H, HK=HK,
                K=K, V=V, BT=BT, BK=BK, BV=BV, USE_INITIAL_STATE=initial_state is not None,
                STORE_FINAL_STATE=output_final_state, STORE_CHUNK_DECAY=False, IS_VARLEN=cu_seqlens is not None,
                DOT_PRECISION=DOT_PRECISION[dtype_name], STORE_STATES=True, STORE_TOTAL_DECAY=False, SEGMENTS=0,
                SEGMENTS_USED=0, num_warps=warps, num_stages=stages,
                maxnreg=_registers("fwd_h", BK, BV, warps, stages),
            )

        _run_tuned("fwd_h", K, V, (N * H, NT), dtype_name, q.device, fwd_h)
    if after_states is not None:
        after_states(final_state)

    gluon_config = _gluon_output_pass(q, k, v, decay, h, T, K, V, cu_seqlens, need_states)
    if gluon_config is not None:
        span_flag = torch.empty(B * NT * H, device=q.device, dtype=torch.int32)
        _gluon_kernels().chunk_fwd_o_gluon(q, k, v, decay, h, o, span_flag, scale, BT, SPAN_LIMIT[dtype_name], *gluon_config)
        # the chunks past its span limit, redone by the sub-chunk path; the others' programs return at once
        fwd_o(*_launch("fwd_o", K, V), span_flag=span_flag)
        return o, h, final_state

    _run_tuned("fwd_o", K, V, (B * H, NT), dtype_name, q.device, fwd_o)
    return o, h, final_state


def chunk_bwd(q, k, v, w, h, do, dht, scale, initial_state, need_initial_state_grad, cu_seqlens, chunk_indices,
              chunk_offsets):
    B, T, H, HK, K, V = _sizes(q, v)
    BT = CHUNK_SIZE
    NT = _cdiv(T, BT) if cu_seqlens is None else chunk_indices.shape[0]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    dtype_name = _DTYPES[q.dtype]
    decay = _decay_input(q, v, w)
    dh = q.new_empty(B, NT, H, K, V)
    dh0 = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device) if need_initial_state_grad else None
    segments = 1 if cu_seqlens is not None else _state_pass_segments(N, H, K, V, NT, "bwd_dh", q.device)
    if segments > 1:
        _split_bwd_dh(q, decay, do, dh, dht, dh0, scale, T, NT, segments, dtype_name)
    else:
        def bwd_dh(BK, BV, warps, stages):
            chunk_bwd_dh_kernel[(_cdiv(K, BK), _cdiv(V, BV), N * H)](
                q, decay, do, dh, dht, dh0, None, cu_seqlens, chunk_offsets, scale, T, NT, H=H, HK=HK, K=K, V=V,
                BT=BT, BK=BK, BV=BV, USE_FINAL_STATE_GRADIENT=dht is not None,
                STORE_INITIAL_STATE_GRADIENT=need_initial_state_grad, STORE_CHUNK_DECAY=False,
                IS_VARLEN=cu_seqlens is not None, DOT_PRECISION=DOT_PRECISION[dtype_name], num_warps=warps,
                num_stages=stages,
                maxnreg=_registers("bwd_dh", BK, BV, warps, stages),
            )

        _run_tuned("bwd_dh", K, V, (N * H, NT), dtype_name, q.device, bwd_dh)
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)

    def bwd_dqkg(BK, BV, warps, stages):
        NK = _cdiv(K, BK)
        dg = torch.empty_like(w)
        chunk_bwd_dqkg_kernel[(NK, NT, B * HK)](
            q, k, v, decay, h, do, dh, dq, dk, dg, cu_seqlens, chunk_indices, scale, T, NT, B * T,
            H=H, HK=HK, K=K, V=V, BT=BT, BC=SUB_CHUNK_SIZE, BK=BK, BV=BV, IS_VARLEN=cu_seqlens is not None,
            SPAN_LIMIT=SPAN_LIMIT[dtype_name], DOT_PRECISION=DOT_PRECISION[dtype_name],
            INTRA_GRAD_DOT_PRECISION=INTRA_GRAD_DOT_PRECISION[dtype_name], num_warps=warps, num_stages=stages,
            maxnreg=_registers("bwd_dqkg", BK, BV, warps, stages),
        )
        return dg

    dg = _run_tuned("bwd_dqkg", K, V, (B * HK, NT), dtype_name, q.device, bwd_dqkg)
    dv = torch.empty_like(v)

    def bwd_dv(BK, BV, warps, stages):
        chunk_bwd_dv_kernel[(_cdiv(V, BV), NT, B * H)](
            q, k, decay, do, dh, dv, cu_seqlens, chunk_indices, scale, T, NT, H=H, HK=HK, K=K, V=V,
            BT=BT, BC=SUB_CHUNK_SIZE, BK=BK, BV=BV, IS_VARLEN=cu_seqlens is not None, SPAN_LIMIT=SPAN_LIMIT[dtype_name],
            DOT_PRECISION=DOT_PRECISION[dtype_name], num_warps=warps, num_stages=stages,
            maxnreg=_registers("bwd_dv", BK, BV, warps, stages),
        )

    _run_tuned("bwd_dv", K, V, (B * H, NT), dtype_name, q.device, bwd_dv)
    return dq, dk, dv, dg, dh0


def _entry(plain, custom_op, eager_function, *tensors):
    """How to run an op: the custom op under torch.compile (it traces through it); outside it, the plain function
    for inference and the autograd.Function for training. The custom-op dispatcher costs tens of microseconds per
    call on the host, as much as a whole decode step's kernel."""
    if torch.compiler.is_compiling():
        return custom_op
    if not torch.is_grad_enabled() or not any(x is not None and x.requires_grad for x in tensors):
        return plain
    return eager_function.apply


# The ops are PyTorch custom ops (torch.library) with fake (meta) implementations and autograd, so that
# torch.compile(fullgraph=True) traces through them without graph breaks. Optional outputs are empty tensors.
_NAMESPACE = "linattn_" + re.sub(r"\W", "_", __name__)
_NONE = (0,)


def _or_none(x):
    return None if x is None or x.numel() == 0 else x


@torch.library.custom_op(f"{_NAMESPACE}::chunk_fwd", mutates_args=())
def _chunk_fwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
    cu_seqlens: Optional[torch.Tensor], chunk_indices: Optional[torch.Tensor], chunk_offsets: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    o, h, final_state = chunk_fwd(q, k, v, w, scale, initial_state, output_final_state, cu_seqlens, chunk_indices,
                                  chunk_offsets)
    return o, h, final_state if final_state is not None else q.new_empty(_NONE, dtype=torch.float32)


@_chunk_fwd_op.register_fake
def _(
    q, k, v, w, scale, initial_state, output_final_state, cu_seqlens, chunk_indices, chunk_offsets,
):
    B, T, H, HK, K, V = _sizes(q, v)
    NT = _cdiv(T, CHUNK_SIZE) if cu_seqlens is None else chunk_indices.shape[0]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    final_shape = (N, H, _state_rows(K), V) if output_final_state else _NONE
    return (torch.empty_like(v), q.new_empty(B, NT, H, _state_rows(K), V),
            q.new_empty(final_shape, dtype=torch.float32))


@torch.library.custom_op(f"{_NAMESPACE}::chunk_bwd", mutates_args=())
def _chunk_bwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, h: torch.Tensor, do: torch.Tensor, dht: Optional[torch.Tensor],
    scale: float, initial_state: Optional[torch.Tensor], need_dh0: bool,
    cu_seqlens: Optional[torch.Tensor], chunk_indices: Optional[torch.Tensor], chunk_offsets: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, dg, dh0 = chunk_bwd(q, k, v, w, h, do, dht, scale, initial_state, need_dh0, cu_seqlens,
                                    chunk_indices, chunk_offsets)
    empty = q.new_empty(_NONE, dtype=torch.float32)
    return dq, dk, dv, dg, empty if dh0 is None else dh0


@_chunk_bwd_op.register_fake
def _(
    q, k, v, w, h, do, dht, scale, initial_state, need_dh0, cu_seqlens, chunk_indices, chunk_offsets,
):
    dh0_shape = tuple(initial_state.shape) if need_dh0 else _NONE
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(w), q.new_empty(dh0_shape, dtype=torch.float32))


def _chunk_setup_context(ctx, inputs, output):
    q, k, v, w, scale, initial_state, output_final_state, cu_seqlens, chunk_indices, chunk_offsets = inputs
    ctx.save_for_backward(q, k, v, w, output[1], initial_state, cu_seqlens, chunk_indices, chunk_offsets)
    ctx.scale = scale
    # the saved states (output 1) never get a gradient: without this, autograd would fill a zero [B, NT, H, K, V]
    # tensor for them on every backward, as many bytes as the states themselves
    ctx.set_materialize_grads(False)


def _chunk_backward(ctx, do, _, dht, backward=_chunk_bwd_op):
    q, k, v, w, h, initial_state, *layout = ctx.saved_tensors
    need_dh0 = initial_state is not None and ctx.needs_input_grad[5]
    do = torch.zeros_like(v) if do is None else do  # only the final state was used
    dht = _or_none(dht)
    grads = backward(q, k, v, w, h, do.contiguous(), None if dht is None else dht.contiguous(), ctx.scale,
                     initial_state, need_dh0, *layout)
    dh0 = grads[-1].to(initial_state.dtype) if need_dh0 else None
    return *grads[:-1], None, dh0, None, None, None, None


_chunk_fwd_op.register_autograd(_chunk_backward, setup_context=_chunk_setup_context)


def _chunk_inference(*args):
    return chunk_fwd(*args, need_states=False)


class _EagerChunk(torch.autograd.Function):
    """Training outside torch.compile: the custom op's forward, saved tensors and backward, without the torch.library
    dispatcher, whose host time outlasted the kernels of short calls: linear attention over 16K tokens took 1.19 ms
    per forward+backward through it and 0.73 ms without it (H100, run 7 in BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = chunk_fwd(*inputs)
        _chunk_setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1])
        return output

    @staticmethod
    def backward(ctx, do, dh, dht):
        return _chunk_backward(ctx, do, dh, dht, backward=_without_absent_gate_gradient(chunk_bwd))


def _without_absent_gate_gradient(backward):
    """The plain backward's (dq, dk, dv, dg, dh0) as the custom op returns them: with dg."""
    def run(*args):
        dq, dk, dv, dg, dh0 = backward(*args)
        return dq, dk, dv, dg, dh0

    return run




def _bonus_key(q, k, v, w, u):
    """b_t, the key with which token t enters its own output: (u * k), [B, T, HK, K]."""
    _check_tensors(("q", q), ("k", k), ("v", v), ("w", w), ("u", u))
    if tuple(u.shape) != tuple(q.shape[2:]) or u.device != q.device:
        raise ValueError(f"u must be [HK, K] = {list(q.shape[2:])} (one vector per query/key head) on "
                         f"{q.device}, got {_describe(u)}")
    u = u.to(q.dtype)  # a float32 parameter would make the bonus key a float32 copy of k
    return k*u


def _previous_step(x, cu_seqlens):
    """x one step later along T: zeros at t = 0 and, with cu_seqlens (on x's device), at every sequence's start."""
    B, T = x.shape[:2]
    starts = (torch.arange(0, B * T, T, device=x.device) if cu_seqlens is None else cu_seqlens[:-1].long())
    return _PreviousStep.apply(x, starts)


class _PreviousStep(torch.autograd.Function):
    """Row t of the flattened [B * T] rows gets row t - 1, and the rows in `starts` (each sequence's first) zeros;
    the gradient moves back the same way. Each direction is one copy between two contiguous row ranges, which PyTorch
    vectorizes. The pad of x[:, :-1] it replaces read a non-contiguous view, and with its gradient ran as 13
    unvectorized copies, 1.1 ms of RWKV-6's forward+backward on the H200 (run 9 profile). One spare row takes the
    index a trailing empty sequence's start (the row count) or a first row's predecessor (-1) points at, so nothing
    here reads the offsets back to the host."""

    @staticmethod
    def forward(ctx, x, starts):
        rows = x.reshape(x.shape[0] * x.shape[1], -1)
        shifted = rows.new_empty(rows.shape[0] + 1, rows.shape[1])  # shifted[r] = rows[r - 1]; the last is spare
        shifted[0].zero_()
        shifted[1:].copy_(rows)
        shifted.index_fill_(0, starts, 0)
        ctx.save_for_backward(starts)
        return shifted[:-1].view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        (starts,) = ctx.saved_tensors
        rows = grad.reshape(grad.shape[0] * grad.shape[1], -1)
        # moved[r + 1] = d rows[r] = grad[r + 1]: the first is spare (index -1); a row whose successor starts a
        # sequence (moved[start]) and the last row fed nothing
        moved = rows.new_empty(rows.shape[0] + 1, rows.shape[1])
        moved[1:-1].copy_(rows[1:])
        moved[-1].zero_()
        moved.index_fill_(0, starts, 0)
        return moved[1:].view(grad.shape), None


def _last_step(final_state, q, k, v, w, cu_seqlens):
    """The state after each sequence's last token from the state before it: S = D * S + k^T v (no step for an empty
    sequence)."""
    H, HK = v.shape[2], k.shape[2]
    if cu_seqlens is None:
        last = [x[:, -1:] for x in (q, k, v, w)]  # [B, 1, ...]
        present = None
    else:
        ends = cu_seqlens[1:].long()
        present = (ends > cu_seqlens[:-1].long()).float()[None, :, None]  # [1, N, 1]
        last = [x[:, (ends - 1).clamp(min=0)] for x in (q, k, v, w)]  # [1, N, ...]
    key = last[1].float().repeat_interleave(H // HK, 2)
    log_decay = _log_decay_steps(last)  # [B, 1, H, K or 1] or [1, N, H, K or 1]; None without decay
    if present is not None:
        key = key * present[..., None]
        log_decay = None if log_decay is None else log_decay * present[..., None]
    state = final_state if log_decay is None else final_state * log_decay.flatten(0, 1).exp()[..., None]
    return state + (key[..., :, None] * last[2].float()[..., None, :]).flatten(0, 1)


def _reads_previous_state(op, q, k, v, w, bonus, scale, initial_state, output_final_state, cu_seqlens=None,
                          sp_group=None):
    """o_t = scale q_t (S_{t-1} + b_t^T v_t). The op's own recurrence run on the keys, values and gates of the step
    before (zeros, and a gate of 0, no decay, before each sequence's first token) reads S_{t-1} at t; the bonus
    scale (q_t . b_t) v_t is added here, and the final state takes its last step here."""
    if sp_group is not None:
        raise ValueError("sp_group is not supported yet for rwkv6 (an output that reads the state before the "
                         "update)")
    packed = None if cu_seqlens is None else _packed_layout(cu_seqlens, q.shape[1], q.device)[0]
    o, final_state = op(q, _previous_step(k, packed), _previous_step(v, packed), _previous_step(w, packed), scale, initial_state, output_final_state,
                        cu_seqlens=cu_seqlens)
    H, HK = v.shape[2], q.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    # products in the inputs' dtype, summed in float32 (and addcmul's opmath). Not einsum: it lowers this to one
    # batched 1 x K x 1 matrix product per token, which took 2.3 of rwkv6's 6.3 ms forward+backward on the H200 (run
    # 9, bench/gpu_profile.py --bonus: 0.25 ms this way; 0.66 ms with float32 copies of the [B, T, H, K] operands).
    # The weight is rounded to o's dtype below in any case.
    weight = (q * bonus.to(q.dtype)).sum(-1, keepdim=True, dtype=torch.float32)
    o = torch.addcmul(o, weight.repeat_interleave(H // HK, 2).to(o.dtype), v.to(o.dtype), value=scale)
    if output_final_state:
        final_state = _last_step(final_state, q, k, v, w, packed)
    return o, final_state


def chunk(
    q, k, v, w, u,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    sp_group: "dist.ProcessGroup | None" = None,
):
    """Chunked (tensor-core) `rwkv6`, differentiable in every tensor input and `initial_state`.

    Args (q, k, v, w, u positionally):
        q, k: [B, T, HK, K] queries and keys.
        v: [B, T, H, V] values. H may be a multiple of HK (grouped heads, as in GQA): each group of H // HK
            value heads, each with its own state, shares one query/key head and its gates, as if they were repeated.
        w: [B, T, HK, K] gate in log space (<= 0): the log of the per-step decay.
        u: [HK, K] per-head parameter, the same at every step; the output reads the state before each step's update, plus the current token through (u * k).
        scale: output scale; default K ** -0.5.
        initial_state: [B, H, K, V] state before the first token (float32 recommended); default zeros.
        output_final_state: also return the [B, H, K, V] float32 state after the last token.
        cu_seqlens: a packed batch of variable-length sequences, as in flash-attention: int32/int64 [N + 1] offsets
            (0 first, non-decreasing, T last) with B = 1; initial_state and final_state are then [N, H, K, V].
            Pass it on the CPU to keep the call free of host-device synchronisation.
        sp_group: sequence parallelism over a torch.distributed group: each rank passes its contiguous shard of the
            sequence (rank order is sequence order) and gets its shard of o. initial_state, if any, is the state
            before the whole sequence (the same on every rank); final_state is the state after this rank's shard
            (the whole sequence's final state on the last rank).

    Returns:
        (o, final_state): o is [B, T, H, V] in the input dtype; final_state is None unless requested.
    """
    return _reads_previous_state(_chunk, q, k, v, w, _bonus_key(q, k, v, w, u), scale, initial_state,
                                 output_final_state, cu_seqlens=cu_seqlens, sp_group=sp_group)


def _chunk(q, k, v, w, scale, initial_state, output_final_state, cu_seqlens=None, sp_group=None):
    if sp_group is not None and cu_seqlens is not None:
        raise ValueError("cu_seqlens and sp_group cannot be combined: shard a packed batch by whole sequences instead")
    tensors, scale, initial_state, layout = _prepare(q, k, v, w, scale, initial_state, cu_seqlens)
    if sp_group is not None:
        o, final_state = _chunk_sequence_parallel(tensors, scale, initial_state, sp_group)
        return o, (final_state if output_final_state else None)
    forward = _entry(_chunk_inference, _chunk_fwd_op, _EagerChunk, *tensors, initial_state)
    o, _, final_state = forward(*tensors, scale, initial_state, output_final_state, *layout)
    return o, (final_state if output_final_state else None)


class _LocalShard(torch.autograd.Function):
    """This rank's shard from a zero state, with the all-gather of every rank's (final state, total log decay)
    overlapped: the gather is started as soon as the state pass is queued and runs during the output pass. Returns
    (o_local, state_local, gathered [ranks, state numel + total numel]). Backward: an all-reduce of the gathered
    tensor's gradient gives this rank's piece (so it works on any backend, gloo included), which joins the
    final-state gradient of chunk_bwd and the gradient of the total log decay (autograd carries that to the gates)."""

    @staticmethod
    def forward(ctx, total_local, group, scale, *tensors):
        pending = []

        def start_gather(state_local):
            packed = torch.cat([state_local.flatten(), total_local.detach().flatten()])
            pieces = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
            pending.append((pieces, dist.all_gather(pieces, packed, group=group, async_op=True)))

        o_local, h, state_local = chunk_fwd(*tensors, scale, None, True, None, None, None, after_states=start_gather)
        pieces, work = pending[0]
        work.wait()
        ctx.save_for_backward(*tensors, h)
        ctx.group, ctx.scale = group, scale
        ctx.state_numel, ctx.total_shape = state_local.numel(), total_local.shape
        return o_local, state_local, torch.stack(pieces)

    @staticmethod
    def backward(ctx, do, dstate, dgathered):
        *tensors, h = ctx.saved_tensors
        dgathered = dgathered.contiguous().clone()
        dist.all_reduce(dgathered, group=ctx.group)
        mine = dgathered[dist.get_rank(ctx.group)]
        dht = mine[:ctx.state_numel].view(dstate.shape) + dstate
        dq, dk, dv, dg, _ = chunk_bwd(*tensors, h, do.contiguous(), dht.contiguous(), ctx.scale, None, False, None,
                                      None, None)
        dtotal = mine[ctx.state_numel:].view(ctx.total_shape)
        return (dtotal, None, None, dq, dk, dv, dg)[:3 + len(tensors)]


def _log_decay_steps(tensors):
    """log D_t of every state (value head) for every step of the shard, fp32, [B, T, H, K or 1]; None when the state
    never decays."""
    B, T, H, HK, K, V = _sizes(tensors[0], tensors[2])
    gate = tensors[3].float()
    # grouped value heads decay with their key head's gate
    return (gate).repeat_interleave(H // HK, 2)


def _chunk_sequence_parallel(tensors, scale, initial_state, group):
    """LASP-2: each rank runs its shard from a zero state; one all-gather of the (final state, total log decay)
    pairs, whose size does not depend on T; each rank folds the earlier ranks' states into the state entering its
    shard and adds that state's contribution to its outputs. Autograd gives the mirrored backward."""
    q = tensors[0]
    B, T, H, HK, K, V = _sizes(tensors[0], tensors[2])
    log_decay = _log_decay_steps(tensors)
    if log_decay is None:
        cumulative = q.new_zeros(B, T, H, 1, dtype=torch.float32)
    else:
        cumulative = log_decay.cumsum(1)
    query = q.float().repeat_interleave(H // HK, 2)  # grouped heads: each value head's query
    total_local = cumulative[:, -1]  # [B, H, K or 1]
    # one collective each way: (state, total log decay) packed into one flat tensor per rank
    o_local, state_local, gathered = _LocalShard.apply(total_local, group, scale, *tensors)
    states = gathered[:, :state_local.numel()].view(-1, *state_local.shape)  # [ranks, B, H, K, V]
    totals = gathered[:, state_local.numel():].view(-1, *total_local.shape)  # [ranks, B, H, K or 1]
    rank = dist.get_rank(group)
    state_in = torch.zeros_like(state_local)
    if initial_state is not None:
        state_in = initial_state.float() * totals[:rank].sum(0).exp()[..., None]
    for p in range(rank):
        state_in = state_in + totals[p + 1:rank].sum(0).exp()[..., None] * states[p]
    correction = torch.einsum("bthk,bhkv->bthv", query * cumulative.exp(), state_in) * scale
    # every rank's o depends on _LocalShard, so every rank runs its backward collective, in the same order
    o = (o_local.float() + correction).to(o_local.dtype)
    final_state = state_local + totals[rank].exp()[..., None] * state_in
    return o, final_state


def recurrent_fwd(q, k, v, w, scale, initial_state, output_final_state, cu_seqlens):
    B, T, H, HK, K, V = _sizes(q, v)
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    BK, BV, warps, _ = _launch("recurrent", K, V)
    o = torch.empty_like(v)
    final_state = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
    recurrent_fwd_kernel[(_cdiv(V, BV), N * H)](
        q, k, v, _decay_input(q, v, w), o, initial_state, final_state, cu_seqlens, scale, T,
        H=H, HK=HK, K=K, V=V, BK=BK, BV=BV, USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=output_final_state,
        IS_VARLEN=cu_seqlens is not None, num_warps=warps,
    )
    return o, final_state


def recurrent_bwd(q, k, v, w, do, dht, scale, initial_state, need_dh0, cu_seqlens):
    B, T, H, HK, K, V = _sizes(q, v)
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    BK, BV, warps, _ = _launch("recurrent", K, V)
    NV = _cdiv(V, BV)
    # dq and dk are summed over V blocks and grouped value heads: one fp32 share per (block, head of the group)
    shares = NV * (H // HK)
    dq = q.new_empty(shares, B, T, HK, K, dtype=torch.float32)
    dk = q.new_empty(shares, B, T, HK, K, dtype=torch.float32)
    dv = torch.empty_like(v)
    dh0 = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device) if need_dh0 else None
    dk_final = q.new_empty(shares, B, T, HK, K, dtype=torch.float32)
    tail = q.new_empty(shares, N, HK, K, dtype=torch.float32)
    recurrent_bwd_kernel[(NV, N * H)](
        q, k, v, _decay_input(q, v, w), do, dq, dk, dv, initial_state,
        dht, dh0, dk_final, tail, cu_seqlens, scale, T, B * T, H=H, HK=HK, K=K, V=V, BK=BK, BV=BV,
        USE_INITIAL_STATE=initial_state is not None, USE_FINAL_STATE_GRADIENT=dht is not None,
        STORE_INITIAL_STATE_GRADIENT=need_dh0, IS_VARLEN=cu_seqlens is not None, num_warps=warps,
    )
    dq, dk = dq.sum(0), dk.sum(0)
    # The gate gradient at t sums the pairs (source j, sink i) with j < t <= i, where sources are the initial state
    # and each token's key, sinks each token's query and the final-state gradient. In closed form that is a reverse
    # cumsum of q * dq - k * dk; the kernel left the diagonal pairs out of dq and dk (they cancel there exactly) and
    # kept the final-state sink apart, whose pairs are summed forward over j < t instead of as a difference. Formed
    # either way round, float32 would leave its rounding as the whole answer when the gate decays hard.
    dk_final, tail = dk_final.sum(0), tail.sum(0)
    dlog = torch.empty_like(w, dtype=torch.float32)
    recurrent_bwd_dlog_kernel[(N * HK,)](
        q, k, dq, dk, dk_final, tail, dlog, cu_seqlens, T, H=H, HK=HK, K=K, V=V,
        BK=_next_power_of_2(K),
        IS_VARLEN=cu_seqlens is not None,
    )
    dg = (dlog * (1.0)).to(w.dtype)
    diagonal = (do.float() * v.float()).sum(-1).unflatten(2, (HK, H // HK)).sum(3)[..., None] * scale
    dq = dq + diagonal * k.float()
    dk = dk + diagonal * q.float() + dk_final
    return dq.to(q.dtype), dk.to(k.dtype), dv, dg, dh0


@torch.library.custom_op(f"{_NAMESPACE}::recurrent_fwd", mutates_args=())
def _recurrent_fwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
    cu_seqlens: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    o, final_state = recurrent_fwd(q, k, v, w, scale, initial_state, output_final_state, cu_seqlens)
    return o, final_state if final_state is not None else q.new_empty(_NONE, dtype=torch.float32)


@_recurrent_fwd_op.register_fake
def _(
    q, k, v, w, scale, initial_state, output_final_state, cu_seqlens,
):
    B, T, H, HK, K, V = _sizes(q, v)
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    final_shape = (N, H, _state_rows(K), V) if output_final_state else _NONE
    return torch.empty_like(v), q.new_empty(final_shape, dtype=torch.float32)


@torch.library.custom_op(f"{_NAMESPACE}::recurrent_bwd", mutates_args=())
def _recurrent_bwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, do: torch.Tensor, dht: Optional[torch.Tensor], scale: float,
    initial_state: Optional[torch.Tensor], need_dh0: bool, cu_seqlens: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, dg, dh0 = recurrent_bwd(q, k, v, w, do, dht, scale, initial_state, need_dh0, cu_seqlens)
    empty = q.new_empty(_NONE, dtype=torch.float32)
    return dq, dk, dv, dg, empty if dh0 is None else dh0


@_recurrent_bwd_op.register_fake
def _(
    q, k, v, w, do, dht, scale, initial_state, need_dh0, cu_seqlens,
):
    dh0_shape = tuple(initial_state.shape) if need_dh0 else _NONE
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(w), q.new_empty(dh0_shape, dtype=torch.float32))


def _recurrent_setup_context(ctx, inputs, output):
    q, k, v, w, scale, initial_state, output_final_state, cu_seqlens = inputs
    ctx.save_for_backward(q, k, v, w, initial_state, cu_seqlens)
    ctx.scale = scale


def _recurrent_backward(ctx, do, dht, backward=_recurrent_bwd_op):
    q, k, v, w, initial_state, cu_seqlens = ctx.saved_tensors
    need_dh0 = initial_state is not None and ctx.needs_input_grad[5]
    dht = _or_none(dht)
    grads = backward(q, k, v, w, do.contiguous(), None if dht is None else dht.contiguous(), ctx.scale,
                     initial_state, need_dh0, cu_seqlens)
    dh0 = grads[-1].to(initial_state.dtype) if need_dh0 else None
    return *grads[:-1], None, dh0, None, None


_recurrent_fwd_op.register_autograd(_recurrent_backward, setup_context=_recurrent_setup_context)


class _EagerRecurrent(torch.autograd.Function):
    """Training outside torch.compile, without the dispatcher (see _EagerChunk)."""

    @staticmethod
    def forward(ctx, *inputs):
        o, final_state = recurrent_fwd(*inputs)
        _recurrent_setup_context(ctx, inputs, (o, final_state))
        return o, final_state

    @staticmethod
    def backward(ctx, do, dht):
        return _recurrent_backward(ctx, do, dht, backward=_without_absent_gate_gradient(recurrent_bwd))


def recurrent(
    q, k, v, w, u,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
):
    """Token-by-token `rwkv6` with the state in registers: decode (T = 1) and short sequences.

    Same arguments and results as `chunk`; a state from either can be handed to the other as `initial_state`.
    """
    return _reads_previous_state(_recurrent, q, k, v, w, _bonus_key(q, k, v, w, u), scale, initial_state,
                                 output_final_state, cu_seqlens=cu_seqlens)


def _recurrent(q, k, v, w, scale, initial_state, output_final_state, cu_seqlens=None):
    tensors, scale, initial_state, (cu_seqlens, _, _) = _prepare(q, k, v, w, scale, initial_state, cu_seqlens)
    forward = _entry(recurrent_fwd, _recurrent_fwd_op, _EagerRecurrent, *tensors, initial_state)
    o, final_state = forward(*tensors, scale, initial_state, output_final_state, cu_seqlens)
    return o, (final_state if output_final_state else None)
