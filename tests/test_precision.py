"""dtype="auto" (with monkeypatched CPU flags and GPUs) and the low-precision check in load()."""

import dataclasses
import warnings

import pytest
import torch

import slimkern
from slimkern import precision, probes
from slimkern.hardware import parse_cpuinfo
from tests.test_hardware import AMD_ZEN3, AMD_ZEN4, GRAVITON3, INTEL_SPR, NO_FLAGS

SMALL = {"depth": 1, "dim": 64, "num_heads": 2}


def load(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("satmae", **SMALL, **kwargs)


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on the CPU of a cpuinfo text."""
    def use(text):
        monkeypatch.setattr(precision, "cpu_info", lambda: parse_cpuinfo(text))
    return use


@pytest.mark.parametrize("text, dtype, reason", [
    (INTEL_SPR, torch.bfloat16, "avx512_bf16 and amx_bf16 and every bfloat16 probe passes"),
    (AMD_ZEN4, torch.bfloat16, "avx512_bf16 and every bfloat16 probe passes"),
    (GRAVITON3, torch.bfloat16, "bf16 and every bfloat16 probe passes"),
    (AMD_ZEN3, torch.float32, "no native bfloat16"),
    (NO_FLAGS, torch.float32, "flags are unknown"),
])
def test_auto_on_cpus(cpu, text, dtype, reason):
    cpu(text)
    choice = precision.auto_dtype("cpu")
    assert choice.dtype == dtype and reason in choice.reason
    assert load(dtype="auto").dtype == dtype


def test_auto_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.auto_dtype("cuda") == precision.DtypeChoice(torch.bfloat16, "GPU NVIDIA H100 has native bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert precision.auto_dtype("cuda:0").dtype == torch.float32


def test_dtype_by_name():
    assert load(dtype="float64").dtype == torch.float64
    assert precision.parse_dtype("torch.bfloat16") == torch.bfloat16
    for bad in ("half-ish", torch.int8, 32):
        with pytest.raises(TypeError, match="dtype must be a floating torch.dtype .* 'auto' or one of 'float32'"):
            precision.parse_dtype(bad)


def test_low_precision_load_probes_once_per_process(fresh_probes):
    for _ in range(3):
        load(dtype=torch.bfloat16)
    load(dtype=torch.float32)  # float32 is not probed at load
    info = probes.run_probes.cache_info()
    assert info.misses == 1 and info.hits == 2


def broken_layer_norm(monkeypatch, dtype=torch.bfloat16):
    """layer_norm that is wrong in ``dtype`` only, as a faulty kernel would be."""
    layer_norm = torch.nn.functional.layer_norm

    def wrong(x, *args, **kwargs):
        y = layer_norm(x, *args, **kwargs)
        return y * 1.5 + 0.25 if x.dtype == dtype else y

    monkeypatch.setattr(torch.nn.functional, "layer_norm", wrong)


def test_load_refuses_a_dtype_that_computes_wrongly(monkeypatch, cpu, fresh_probes):
    broken_layer_norm(monkeypatch)
    with pytest.raises(precision.DtypeCheckError, match=r"computes bfloat16 wrongly on this CPU .*layer_norm \[d=96\] "
                       r"in bfloat16 on cpu: relative error .* WRONG.*dtype=torch.float32.*ONEDNN_MAX_CPU_ISA"):
        load(dtype=torch.bfloat16)
    assert load(dtype=torch.float16).dtype == torch.float16  # only bfloat16 is broken
    cpu(INTEL_SPR)
    choice = precision.auto_dtype("cpu")
    assert choice.dtype == torch.float32 and "computes bfloat16 wrongly here: layer_norm" in choice.reason
    assert load(dtype="auto").dtype == torch.float32


def test_check_error_is_a_value_error():
    assert issubclass(precision.DtypeCheckError, ValueError)  # as load's other refusals of this machine


def test_only_cpu_low_precision_is_probed(fresh_probes):
    precision.check_dtype(torch.float32, "cpu")
    precision.check_dtype(torch.bfloat16, "cuda")
    assert probes.run_probes.cache_info().misses == 0


def test_choice_text():
    choice = precision.DtypeChoice(torch.bfloat16, "why")
    assert str(choice) == "bfloat16 (why)" and dataclasses.is_dataclass(choice)
