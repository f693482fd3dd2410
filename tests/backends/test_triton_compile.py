"""Ahead-of-time compile of the Triton kernels for H100 (sm_90) on any machine, GPU or not.

The interpreter (TRITON_INTERPRET=1, set by conftest on GPU-less machines) replaces JIT functions, so the compile
runs in a subprocess with TRITON_INTERPRET unset: this file is also the script that subprocess runs. It calls the
host functions on CPU tensors of ViT-B/16 shapes (batch 16, width 0.1) with the kernel launch intercepted, so the
signatures, constexpr flags and runtime specialisation (ints equal to 1 become constants, ints and pointers
divisible by 16 get divisibility hints, as the JIT does) are the ones a real launch produces. Each capture is then
compiled at every configuration of the module's ``CONFIGS`` table that its heuristic chooses from.

By default each configuration is compiled in each dtype with the heaviest variant (attention: also without a bias,
which has its own configurations) and every constexpr variant in bf16 at one configuration: 104 compiles, about
80-100 s of CPU (45-60 s on 2 idle cores, cold cache). ``SLIMKERN_AOT_ALL=1`` compiles the full product (318).
Compiles land in Triton's cache dir, so a rerun takes seconds.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SM = 90
H100_MAX_SHARED = 232448  # bytes of shared memory one block may use on sm_90
# ViT-B/16 at 224 px, batch 16, width 0.1: d' = 6, d_h' = 307 (odd, unaligned widths on purpose).
BATCH, TOKENS, HEADS, WIDTH, HIDDEN = 16, 197, 12, 768, 3072
D_SLIM, DH_SLIM = 6, 307
# Head dim per attention BLOCK_D and row width per layer-norm BLOCK_D used for the captured launches.
ATTENTION_HEAD_DIMS = {16: 6, 32: 21, 64: 48, 128: 96, 256: 256}
LAYER_NORM_WIDTHS = {64: 48, 128: 96, 256: 192, 512: 384, 1024: 768, 2048: 1536, 4096: 3072, 8192: 8192}


def _module(name: str):
    return importlib.import_module(f"slimkern.backends.triton.{name}_kernel")


def _capture(module: str, kernel: str, call) -> tuple[list, dict]:
    """Run a host function with its kernel launch replaced by a recorder; return the launch's (args, kwargs)."""
    fn = getattr(_module(module), kernel)
    launches = []
    fn.run = lambda *args, **kwargs: launches.append((list(args), {k: v for k, v in kwargs.items() if k != "grid"}))
    try:
        call()
    finally:
        del fn.run
    assert len(launches) == 1, launches
    return launches[0]


def _gemm_launches(dtype: torch.dtype):
    """(variant, candidate configs, host call) per epilogue variant; fused gelu + bias + LayerScale residual first."""
    sl = _module("sliced_linear")
    m = BATCH * TOKENS

    def empty(*shape):
        return torch.empty(shape, dtype=dtype)

    ln_out = empty(m, WIDTH)
    for act, has_bias, (has_res, has_gamma) in itertools.product(
        ("gelu", None, "gated"), (True, False), ((True, True), (True, False), (False, False))
    ):
        if has_res:  # fc2-like: unaligned k_in read from a padded fc1 output, full-width residual
            n_out, k_in = WIDTH, DH_SLIM
            x, weight = empty(m, 320)[:, :DH_SLIM], empty(n_out, HIDDEN)
        else:  # fc1-like: the gated FFN reads its value rows (fc3) from a second weight
            n_out, k_in = DH_SLIM, WIDTH
            x, weight = ln_out, empty(HIDDEN, WIDTH)
        gated = act == "gated"
        call = partial(
            sl.launch, x, weight, empty(n_out) if has_bias else None, n_out, k_in, gelu=act == "gelu",
            value_weight=torch.empty_like(weight) if gated else None,
            value_bias=empty(n_out) if gated and has_bias else None,
            residual=empty(m, n_out) if has_res else None, gamma=empty(n_out) if has_gamma else None,
        )  # fmt: skip
        yield f"act={act} bias={has_bias} res={has_res} gamma={has_gamma}", sl.candidate_configs(dtype, gated), call
    for has_bias in (False, True):
        n_out = 3 * HEADS * D_SLIM
        call = partial(
            sl.launch, ln_out, empty(3 * WIDTH, WIDTH), empty(n_out) if has_bias else None, n_out, WIDTH,
            qkv_heads=HEADS, seq_len=TOKENS,
        )  # fmt: skip
        yield f"qkv bias={has_bias}", sl.candidate_configs(dtype, True), call


def _attention_launches(dtype: torch.dtype, block_d: int):
    """(variant, candidate configs, host call) per bias variant; a bias in the dtype of q (the heaviest) first."""
    att = _module("attention")
    d = ATTENTION_HEAD_DIMS[block_d]
    q, k, v = torch.empty(3, BATCH, HEADS, TOKENS, d, dtype=dtype)  # views of the qkv GEMM output
    for bias_dtype in dict.fromkeys((dtype, torch.float32, None)):
        bias = None if bias_dtype is None else torch.empty(HEADS, TOKENS, TOKENS, dtype=bias_dtype)
        configs = att.candidate_configs(dtype, block_d, has_bias=bias is not None)
        yield f"d'={d} bias={bias_dtype}", configs, partial(att.launch, q, k, v, d**-0.5, bias)


def _layer_norm_launches(dtype: torch.dtype, block_d: int):
    """(variant, candidate configs, host call) per weight/bias combination; both first."""
    ln = _module("layer_norm")
    d = LAYER_NORM_WIDTHS[block_d]
    x = torch.empty(BATCH * TOKENS, d, dtype=dtype)
    for has_w, has_b in itertools.product((True, False), repeat=2):
        weight, bias = (torch.empty(d, dtype=dtype) if flag else None for flag in (has_w, has_b))
        call = partial(ln.launch, x, weight, bias, 1e-6)
        yield f"d={d} w={has_w} b={has_b}", (ln.CONFIGS[block_d],), call


def _jobs(full: bool):
    """(label, module, kernel, specialisation) per compile: captured launches at each GPU configuration.

    Default: every configuration in every dtype with the first (heaviest) variant (attention: also without bias,
    which has its own configurations), plus every variant in bf16 at one configuration (GEMM: the largest tile;
    attention: BLOCK_D 64, large block; layer norm: BLOCK_D 1024).
    """

    def job(label, module, kernel, call, **overrides):
        args, kwargs = _capture(module, kernel, call)
        fn = getattr(_module(module), kernel)
        return label, module, kernel, _specialize(fn, args, kwargs | overrides | {"UPCAST": False})

    for dtype_name in ("float32", "bfloat16", "float16"):
        dtype, bf16 = getattr(torch, dtype_name), dtype_name == "bfloat16"
        for vi, (variant, configs, call) in enumerate(_gemm_launches(dtype)):
            for ci, cfg in enumerate(configs):
                if full or vi == 0 or (bf16 and ci == 0):
                    yield job(
                        f"sliced_linear {dtype_name} {tuple(cfg)} {variant}", "sliced_linear", "_sliced_linear_kernel",
                        call, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                    )  # fmt: skip
        for block_d in ATTENTION_HEAD_DIMS:
            variants = list(_attention_launches(dtype, block_d))
            for vi, (variant, configs, call) in enumerate(variants):
                for ci, cfg in enumerate(configs):
                    # A bias has its own configurations: both the heaviest bias and no bias run at every one.
                    if full or vi in (0, len(variants) - 1) or (bf16 and ci == 0 and block_d == 64):
                        yield job(
                            f"attention {dtype_name} D={block_d} {tuple(cfg)} {variant}", "attention",
                            "_attention_kernel", call, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                        )  # fmt: skip
        for block_d in LAYER_NORM_WIDTHS:
            for vi, (variant, (cfg,), call) in enumerate(_layer_norm_launches(dtype, block_d)):
                if full or vi == 0 or (bf16 and block_d == 1024):
                    yield job(
                        f"layer_norm {dtype_name} D={block_d} {tuple(cfg)} {variant}", "layer_norm",
                        "_layer_norm_kernel", call, BLOCK_M=cfg.block_m, num_warps=cfg.num_warps,
                    )  # fmt: skip


def _specialize(fn, args: list, kwargs: dict) -> tuple[dict, dict, dict, dict]:
    """Signature, constexprs, attrs and options the JIT would compile for this launch (its specialisation rule)."""
    dtypes = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    signature, constexprs, attrs = {}, {}, {}
    options = {"num_warps": kwargs.pop("num_warps"), "num_stages": kwargs.pop("num_stages", 3)}
    for i, name in enumerate(fn.arg_names):
        value = args[i] if i < len(args) else kwargs[name]
        if name in kwargs or (isinstance(value, int) and value == 1):
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + dtypes[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32"
    return signature, constexprs, attrs, options


def _compile(job) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    label, module, kernel, (signature, constexprs, attrs, options) = job
    fn = getattr(_module(module), kernel)
    start = time.perf_counter()
    try:
        compiled = triton.compile(
            triton.compiler.ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", SM, 32),
            options=options,
        )  # fmt: skip
    except Exception as exc:  # reported per variant by the test
        return {"label": label, "error": f"{type(exc).__name__}: {exc}"}
    seconds = time.perf_counter() - start
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    regs, stack = (int(re.search(rf"{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK"))
    return {
        "label": label,
        "seconds": round(seconds, 2),
        "wgmma": "wgmma" in compiled.asm["ptx"],
        "regs": regs,
        "stack": stack,  # bytes of local memory per thread: register spills
        "shared": compiled.metadata.shared,
    }


def main() -> None:
    jobs = list(_jobs(full=os.environ.get("SLIMKERN_AOT_ALL") == "1"))
    workers = min(len(os.sched_getaffinity(0)), 16)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for result in pool.map(_compile, jobs):
            print(json.dumps(result), flush=True)


@pytest.fixture(scope="module")
def compiled() -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["label"]: r for r in results}


def test_every_kernel_compiles_for_sm90(compiled):
    assert {label.split()[0] for label in compiled} == {"sliced_linear", "attention", "layer_norm"}
    errors = [f"{label}: {r['error']}" for label, r in compiled.items() if "error" in r]
    assert not errors, "\n".join(errors)
    too_big = [f"{label}: {r['shared']} B" for label, r in compiled.items() if r["shared"] > H100_MAX_SHARED]
    assert not too_big, "shared memory beyond sm_90's limit:\n" + "\n".join(too_big)


def test_half_precision_gemm_uses_wgmma(compiled):
    gemms = {label: r for label, r in compiled.items() if re.match(r"sliced_linear (bfloat16|float16) ", label)}
    assert gemms
    missing = [label for label, r in gemms.items() if not r.get("wgmma")]
    assert not missing, "no wgmma in:\n" + "\n".join(missing)


def test_half_precision_kernels_do_not_spill(compiled):
    """bf16/fp16 kernels keep everything in registers (fp32 runs 3xTF32 and may spill at large head dims)."""
    half = {label: r for label, r in compiled.items() if re.match(r"\w+ (bfloat16|float16) ", label)}
    assert half
    spills = [f"{label}: {r['stack']} B stack, {r['regs']} registers" for label, r in half.items() if r["stack"]]
    assert not spills, "register spills:\n" + "\n".join(spills)


if __name__ == "__main__":
    main()
