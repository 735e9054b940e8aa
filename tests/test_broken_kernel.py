"""A deliberately broken kernel fails the check: the tests of test_kernels.py can tell right from wrong.

The rendered gla package is written to a temporary folder with one line of kernels.py mutated and imported under a
fresh module name. The unmutated copy, imported the same way, must pass, so a failure here is the mutation's doing.
"""

from __future__ import annotations

import re

import pytest
import torch
from helpers import import_package, spec_path, write_package

from linattn_gen.check import check_op
from linattn_gen.lower import lower

SHAPE = (1, 100, 2, 32, 32)  # T = 100: two chunks, so the state carried between chunks matters
TOL = 1e-3

# name -> (pattern, replacement): each breaks one piece of the math and leaves the kernels valid Triton
MUTATIONS = {
    # the diagonal (each token attending to itself) drops out of the intra-chunk scores
    "causal_mask": (r"(m_causal = o_i\[:, None\] )>=( o_i\[None, :\])", r"\1>\2"),
    # the forward state pass no longer decays the state it carries into the next chunk
    "state_decay": (r"^[ \t]*b_h \*= .*\n", ""),
    # the backward state-gradient pass no longer decays dS: the forward stays right, the gradients go wrong
    "state_grad_decay": (r"^[ \t]*b_dh \*= .*\n", ""),
}


@pytest.fixture(scope="module")
def gla_files():
    return lower(spec_path("gla")).files


def _check(files, tmp_path, seed=0):
    module = import_package(write_package(files, tmp_path / "gla"), prefix="linattn_gen_broken_gla")
    return check_op(module, spec_path("gla"), *SHAPE, dtype=torch.float32, seed=seed)


def test_unmutated_copy_passes(gla_files, tmp_path):
    result = _check(gla_files, tmp_path)
    assert result.max_error <= TOL, result.errors


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_broken_kernel_fails(gla_files, tmp_path, mutation):
    pattern, replacement = MUTATIONS[mutation]
    text, count = re.subn(pattern, replacement, gla_files["kernels.py"], flags=re.MULTILINE)
    assert count >= 1, f"mutation {mutation!r} found nothing to break in kernels.py; update its pattern"
    result = _check({**gla_files, "kernels.py": text}, tmp_path)
    assert result.max_error > 100 * TOL, f"{mutation}: the broken kernel passed the check: {result.errors}"
    if mutation == "state_grad_decay":
        assert result.errors["o"] <= TOL and result.errors["final_state"] <= TOL, result.errors
