"""Self-checks of every op the torch runtime uses, in a given dtype on this machine, against float64.

A library can compute wrongly on one CPU and correctly on another (torch 2.14.1's oneDNN bfloat16 convolution gives
garbage on AMX CPUs at 4-16 input channels, issue 12), and nothing in a forward pass notices. These probes run each
op slimkern's torch path calls, in the call forms it uses (GEMMs on prefix and strided views of a weight, row- and
column-major, with and without a bias; batched matmuls; attention at odd head dims with and without an additive bias;
LayerNorm, GELU, SiLU, softmax, the LayerScale residual, mean pooling; the fused oneDNN GEMMs of the CPU fast path
with each epilogue; the patch-embedding stem at 1..16 bands; one slimmed block end to end), on small random inputs
rounded to the dtype, and compare with the same op in float64 on the same rounded inputs. A wrong kernel is off by
O(1); a correct one by a few units of rounding. ``tests/test_probe_coverage.py`` checks that every arithmetic op a
low-precision forward of any family runs is among them.

The stem and block probes run whatever this machine's fast path runs: the fused GEMMs where their own probes pass
(:func:`slimkern.backends.torch.onednn.usable`), the plain ops where they do not.

:func:`run_probes` is cached per (device, dtype), so :func:`slimkern.load` checks a low-precision CPU model once per
process (under 0.1 s of CPU time); ``slimkern doctor`` prints every result.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F

from .backends.torch.onednn import fused_gemm_cases
from .probe_runner import FUSED_GEMM, SEED, TOLERANCE, Case, NotApplicable, ProbeResult, probe

__all__ = ["FUSED_GEMM", "TOLERANCE", "Case", "NotApplicable", "ProbeResult", "cases", "failures",
           "fused_gemm_cases", "probe", "run_probes"]

def _linear_cases() -> list[Case]:
    def rows(m, k, n, kept, bias=True):  # qkv / fc1: the first ``kept`` rows of a [n, k] weight, a contiguous prefix
        def fn(make):
            (x, x64), (w, w64), (b, b64) = make(m, k), make(n, k, scale=k**-0.5), make(n)
            b, b64 = (b[:kept], b64[:kept]) if bias else (None, None)
            return F.linear(x, w[:kept], b), F.linear(x64, w64[:kept], b64)
        return "linear", f"row prefix {kept}/{n} of K={k}{'' if bias else ', no bias'}", fn

    def cols(m, k, n, kept):  # out-proj / fc2: the first ``kept`` columns, read with the full leading dimension
        def fn(make):
            (x, x64), (w, w64), (b, b64) = make(m, kept), make(n, k, scale=kept**-0.5), make(n)
            return F.linear(x, w[:, :kept], b), F.linear(x64, w64[:, :kept], b64)
        return "linear", f"column prefix {kept}/{k}, N={n}", fn

    def cols_of_column_major(m, k, n, kept):  # out-proj / fc2 as the torch backend keeps them on the CPU
        def fn(make):
            (x, x64), (w, w64), (b, b64) = make(m, kept), make(k, n, scale=kept**-0.5), make(n)
            return F.linear(x, w.t()[:, :kept], b), F.linear(x64, w64.t()[:, :kept], b64)
        return "linear", f"column prefix {kept}/{k} of a column-major weight, N={n}", fn

    def batched(b, m, k, n):  # attention inside a stem (Panopticon's channel fusion): q @ k^T, probs @ v
        def fn(make):
            (x, x64), (y, y64) = make(b, 3, m, k), make(b, 3, k, n)
            return x @ y, x64 @ y64
        return "batched matmul", f"{b}x3 of {m}x{k} @ {k}x{n}", fn

    return [rows(197, 96, 288, 3 * 21), rows(37, 768, 64, 64), rows(16, 3072, 48, 48),
            rows(2 * 13, 64, 96, 21, bias=False), cols(197, 384, 96, 6), cols(50, 256, 64, 255),
            cols_of_column_major(2 * 37, 384, 96, 6), cols_of_column_major(37, 3072, 96, 307),
            batched(5, 1, 21, 13), batched(5, 13, 1, 21)]


def _attention_cases() -> list[Case]:
    def case(head_dim, bias):
        def fn(make):
            (q, q64), (k, k64), (v, v64) = (make(2, 3, 37, head_dim) for _ in range(3))
            mask, mask64 = make(3, 37, 37) if bias else (None, None)
            scale = head_dim**-0.5
            scores = (q64 @ k64.transpose(-1, -2)) * scale + (0 if mask64 is None else mask64)
            ref = torch.softmax(scores, dim=-1) @ v64
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale), ref
        return "attention (SDPA)", f"d_k'={head_dim}{', additive bias' if bias else ''}", fn

    return [case(d, bias) for d in (1, 6, 21, 64) for bias in (False, True)]


def _pointwise_cases() -> list[Case]:
    def layer_norm(width):
        def fn(make):
            (x, x64), (w, w64), (b, b64) = make(19, width, scale=3.0), make(width), make(width)
            mean = x64.mean(-1, keepdim=True)
            ref = (x64 - mean) / torch.sqrt(((x64 - mean) ** 2).mean(-1, keepdim=True) + 1e-6) * w64 + b64
            return F.layer_norm(x, (width,), w, b, 1e-6), ref
        return "layer_norm", f"d={width}", fn

    def unary(op, name, formula):
        def fn(make):
            x, x64 = make(37, 130, scale=3.0)
            return op(x), formula(x64)
        return name, "37x130", fn

    def layer_scale(fn_name):  # the residual of a LayerScale block, x + gamma * y
        def fn(make):
            (x, x64), (y, y64), (g, g64) = make(2, 37, 96), make(2, 37, 96), make(96, scale=0.1)
            out = torch.addcmul(x, y, g) if fn_name == "addcmul" else x + y * g
            return out, x64 + y64 * g64
        return f"residual {fn_name}", "x + gamma * y, 2x37x96", fn

    def mean_pool(make):  # the pooled embedding of the families that average their patch tokens
        x, x64 = make(2, 197, 96)
        return x[:, 1:].mean(1), x64[:, 1:].mean(1)

    return [layer_norm(96), layer_norm(1024),
            unary(F.gelu, "gelu", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
            unary(F.silu, "silu", lambda x: x / (1 + torch.exp(-x))),
            unary(lambda x: torch.softmax(x, -1), "softmax", lambda x: torch.exp(x) / torch.exp(x).sum(-1, True)),
            layer_scale("addcmul"), layer_scale("add, mul"), ("mean pooling", "196 tokens", mean_pool)]


def _stem_cases() -> list[Case]:
    from .zoo.stem import patch_embed

    def case(bands, patch, padding):
        def fn(make):
            x, x64 = make(1, bands, 3 * patch, 2 * patch + 1)
            (w, w64), (b, b64) = make(40, bands, patch, patch, scale=(bands * patch * patch) ** -0.5), make(40)
            out, ref = (patch_embed(*args, patch, padding=padding)[0] for args in ((x, w, b), (x64, w64, b64)))
            return out, ref
        return "stem (patchify + GEMM)", f"{bands} bands, patch {patch}{', padding 1' if padding else ''}", fn

    return [case(c, 8, 0) for c in range(1, 17)] + [case(12, 16, 1), case(6, 14, 0)]


def _block_cases() -> list[Case]:
    from .backends import select_backend
    from .blocks import Block, BlockSpec
    from .plan import make_plan
    from .reference import REFERENCE

    def case(ffn, width, layer_scale):
        def fn(make):
            spec = BlockSpec(dim=96, num_heads=3, head_dim=32, mlp_hidden=192, ffn=ffn, layer_scale=layer_scale)
            x, x64 = make(2, 37, 96)
            block = Block(spec).to_empty(device="cpu")
            block.init_random(torch.Generator().manual_seed(SEED))
            block = block.to(x.device, x.dtype)
            block64 = copy.deepcopy(block).double()  # the same rounded weights
            backend = select_backend("torch", x.device, x.dtype)
            backend.arrange_weights([block], x.device, x.dtype)  # as a loaded model holds them
            plan = make_plan(width, "attn+ffn", ((3, 32, 192),))
            return backend.forward_blocks(x, [block], plan), REFERENCE.forward_blocks(x64, [block64], plan)
        scale = ", LayerScale" if layer_scale else ""
        return "transformer block (torch backend)", f"{ffn} FFN{scale}, width {width}", fn

    return [case("gelu", 0.2, False), case("gelu", 0.04, True), case("swiglu", 1.0, True)]


def cases() -> list[Case]:
    """Every probe case, in the order ``slimkern doctor`` prints them (the fused GEMMs before the block, whose
    CPU fast path uses them)."""
    return (_linear_cases() + _attention_cases() + _pointwise_cases() + _stem_cases() + fused_gemm_cases()
            + _block_cases())


@functools.cache
def run_probes(device: str, dtype: torch.dtype) -> tuple[ProbeResult, ...]:
    """Every probe on ``device`` in ``dtype`` (cached per process: call ``run_probes.cache_clear()`` to re-run)."""
    return probe(cases(), device, dtype)


def failures(device: str | torch.device, dtype: torch.dtype, required: bool = True) -> list[ProbeResult]:
    """The probes that are wrong on ``device`` in ``dtype``: those of ops the runtime cannot do without, or with
    ``required=False`` every one (empty: all within tolerance)."""
    return [r for r in run_probes(torch.device(device).type, dtype) if not r.ok and (r.required or not required)]
