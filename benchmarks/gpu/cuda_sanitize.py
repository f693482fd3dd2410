"""A small forward through every CUDA kernel, for ``compute-sanitizer --tool memcheck`` (benchmarks/gpu/run.sh).

    compute-sanitizer --tool memcheck --error-exitcode 1 python -m benchmarks.gpu.cuda_sanitize

Odd sizes on both load paths (16-byte cp.async and element-wise), weights read as prefixes, every epilogue, head
dims 1, 6, 21, 64 and 256 with and without a bias, cross attention, LayerNorm with a residual, then a tiny
bf16 model through the ``cuda`` backend at two widths. Out-of-bounds accesses are the sanitizer's to report;
this script only fails when the backend is unavailable.
"""

from __future__ import annotations

import sys

import torch


def main() -> int:
    from slimkern.backends import list_backends

    why = list_backends()["cuda"]
    if why:
        print(f"cuda backend unavailable: {why}", file=sys.stderr)
        return 1
    from slimkern.backends import cuda as ops
    from tests.helpers import tiny_model

    dev, dt = "cuda", torch.bfloat16
    torch.manual_seed(0)
    for offset in (0, 3):  # aligned and unaligned loads
        x = torch.randn(197, 72, device=dev, dtype=dt)[:, offset: offset + 64]
        w, wv, b = (torch.randn(130, 72, device=dev, dtype=dt), torch.randn(130, 72, device=dev, dtype=dt),
                    torch.randn(130, device=dev, dtype=dt))
        r, g = torch.randn(197, 99, device=dev, dtype=dt), torch.randn(99, device=dev, dtype=dt)
        ops.sliced_linear(x, w, b, n_out=99, k_in=61, activation="gelu")
        ops.sliced_linear(x, w, b, n_out=99, k_in=61, residual=r, gamma=g)
        ops.sliced_linear(x, w, b, n_out=99, k_in=61, value_weight=wv, value_bias=b)
        ops.sliced_linear(x, w, n_out=3 * 2 * 21, k_in=64, qkv_heads=2, seq_len=197)
    for d in (1, 6, 21, 64, 256):
        q, k, v = torch.randn(3, 2, 2, 77, d, device=dev, dtype=dt)
        bias = torch.randn(2, 70, 77, device=dev)
        ops.attention(q[:, :, :70], k, v, scale=d**-0.5, bias=bias)
        ops.attention(q, k, v, scale=d**-0.5)
    x = torch.randn(197, 770, device=dev, dtype=dt)[:, :768]
    ops.layer_norm(x, x[0], x[1], 1e-6)
    model = tiny_model(img_size=64, device=dev, dtype=dt, backend="cuda")
    images = torch.randn(2, 3, 64, 64, device=dev, dtype=dt)
    for width in (1.0, 0.1):
        model.run(images, width)
    torch.cuda.synchronize()
    print("sanitized forward done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
