"""One stored copy of the weights serves every width: no per-width copies, ever."""

import torch
from torch.profiler import ProfilerActivity, profile

from slimkern.reference import kept_head_dims
from tests.helpers import tensor_storage_bytes, tiny_model

WIDTHS = (1.0, 0.5, 0.333, 0.1, 0.01)
COPY_OPS = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::index", "aten::gather", "aten::index_select")


def weight_shapes(model, width: float) -> set[tuple[int, int]]:
    """Shapes of the full block weights and of their slices at ``width``."""
    shapes = set()
    for block in (model.plan(1.0).blocks[0], model.plan(width).blocks[0]):
        d, a, h = model.dim, block.attn_width, block.mlp_hidden
        shapes |= {(3 * a, d), (d, a), (a, d), (h, d), (d, h)}
    return shapes


def copied_shapes(prof) -> set[tuple[int, ...]]:
    return {tuple(e.input_shapes[0]) for e in prof.events() if e.name in COPY_OPS and e.input_shapes}


def test_no_storage_growth_after_five_widths():
    model = tiny_model()
    before = tensor_storage_bytes(model)
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    x = torch.randn(1, 3, 224, 224)
    for width in WIDTHS:
        for mode in ("attn+ffn", "attn", "ffn"):
            model.run(x, width, mode=mode)
    assert tensor_storage_bytes(model) == before
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers
    # the model holds exactly its parameters: nothing else was cached on it
    assert before == sum(p.untyped_storage().nbytes() for p in model.parameters())


def test_torch_backend_never_copies_a_weight():
    """The profiler sees every aten copy, nested ones included; none may have a weight slice's shape."""
    model = tiny_model()
    x = torch.randn(2, 3, 224, 224)  # 2 x 197 = 394 rows: no weight has that many rows or columns
    for width in WIDTHS:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model.run(x, width)
        copied = copied_shapes(prof)
        assert copied, "the profiler recorded no copy at all: the check would be vacuous"
        assert not copied & weight_shapes(model, width), (width, copied & weight_shapes(model, width))


def test_profiler_check_catches_a_gathering_implementation():
    """The shape check above does see a per-call gather of the paper's qkv rows (as plain PyTorch would do)."""
    model = tiny_model()
    weight = model.blocks[0].official("attn.qkv.weight")
    idx = kept_head_dims(2, 64, 6)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        weight[idx]
    assert copied_shapes(prof) & weight_shapes(model, 0.1)
