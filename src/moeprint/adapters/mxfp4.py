"""MXFP4 (OCP microscaling FP4) as stored in the original gpt-oss checkpoints: the codec and its layout.

On disk an expert weight W (E, in, out) is stored transposed, as rows of the output dimension:
    *_blocks  (E, out, in/32, 16) uint8   two FP4 e2m1 codes per byte, LOW nibble first
    *_scales  (E, out, in/32)     uint8   one E8M0 exponent per 32 values, bias 127
value = FP4[code] * 2**(scale - 127). Dequantising gives (E, out, in) which is transposed to the
(E, in, out) layout of the model parameter. Pruning never needs this (the expert axis is axis 0 of
both tensors); it is used by `--dtype bf16` and by the tests that prove MXFP4 surgery is exact.
A family stored this way declares `mxfp4_layout(...)` as its `MoEAdapter.quantisation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from moeprint.adapters.descriptors import QuantLayout

# FP4 e2m1: sign bit, 2 exponent bits, 1 mantissa bit. Code -> value.
FP4_E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
BLOCK_SIZE = 32  # values sharing one scale
SCALE_BIAS = 127


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(E, out, G, 16) uint8 blocks + (E, out, G) uint8 scales -> (E, G*32 = in, out) weights in `dtype`.

    Every FP4 value times a power of two is exact in float32; the result is rounded to `dtype` once.
    """
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise ValueError(f"MXFP4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != BLOCK_SIZE // 2:
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    lut = torch.tensor(FP4_E2M1_VALUES, dtype=torch.float32)
    low = lut[(blocks & 0x0F).long()]  # (E, out, G, 16)
    high = lut[(blocks >> 4).long()]  # (E, out, G, 16)
    values = torch.stack((low, high), dim=-1).flatten(-2)  # (E, out, G, 32): low nibble first
    exponent = scales.to(torch.int32) - SCALE_BIAS  # (E, out, G)
    values = torch.ldexp(values, exponent.unsqueeze(-1).to(torch.float32))  # (E, out, G, 32)
    values = values.flatten(-2)  # (E, out, in)
    return values.transpose(-1, -2).contiguous().to(dtype)  # (E, in, out)


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, in, out) float weights -> (blocks (E, out, in/32, 16), scales (E, out, in/32)), round-to-nearest.

    A small reference quantiser for building MXFP4 checkpoints in the real gpt-oss layout (tests,
    benchmarks). Each block's scale is the smallest power of two that maps its max |value| into 6.0.
    """
    n_experts, n_in, n_out = weight.shape
    if n_in % BLOCK_SIZE:
        raise ValueError(f"MXFP4 needs the input dimension to be a multiple of {BLOCK_SIZE}, got {n_in}")
    rows = weight.float().transpose(-1, -2).reshape(n_experts, n_out, n_in // BLOCK_SIZE, BLOCK_SIZE)  # (E, out, G, 32)
    amax = rows.abs().amax(dim=-1)  # (E, out, G)
    exponent = torch.ceil(torch.log2(amax.clamp(min=2.0**-126) / 6.0)).clamp(-127, 127)  # (E, out, G)
    scaled = rows / torch.ldexp(torch.ones_like(exponent), exponent).unsqueeze(-1)  # (E, out, G, 32), |x| <= 6
    lut = torch.tensor(FP4_E2M1_VALUES[:8], dtype=torch.float32)  # magnitudes of codes 0..7
    magnitude_code = (scaled.abs().unsqueeze(-1) - lut).abs().argmin(dim=-1)  # (E, out, G, 32) nearest magnitude
    codes = (magnitude_code | ((scaled < 0).long() << 3)).to(torch.uint8)  # sign bit = 8
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)  # (E, out, G, 16): low nibble = even position
    scales = (exponent + SCALE_BIAS).to(torch.uint8)  # (E, out, G)
    return blocks.contiguous(), scales.contiguous()


def _decoded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    *lead, out_features, groups, _ = shape  # (E, out, in/32, 16) -> (E, in, out)
    return (*lead, groups * BLOCK_SIZE, out_features)


def dequantise_expertwise(blocks, scales, dtype):
    """transformers' MXFP4 -> `dtype` conversion applied one expert at a time into the final tensor.

    Stock transformers (5.24, integrations/mxfp4.py) dequantises a layer's whole (E, R, G, 16) block tensor at
    once: a (E*R*G, 32) output, the int32 index of one nibble half (as large as the output in bf16) and its
    lookup result, then a transposed contiguous copy. For gpt-oss-20b's gate_up_proj that is ~1.9 GB beyond
    the final 1.06 GB parameter (docs/memory.md). Per expert the same function needs 1/E of that. The values
    are bit-identical: every step (table lookup, ldexp) is elementwise."""
    import torch
    from transformers.integrations import mxfp4

    if blocks.dim() != 4:  # not the (E, R, G, 16) expert layout: transformers' own whole-tensor conversion
        return torch.nn.Parameter(mxfp4.convert_moe_packed_tensors(blocks, scales, dtype=dtype))
    n_experts, rows, groups, half_block = blocks.shape  # (E, R, G, 16) uint8: two FP4 codes per byte
    out = torch.empty(n_experts, groups * half_block * 2, rows, dtype=dtype, device=blocks.device)  # (E, in, R)
    for e in range(n_experts):
        out[e] = mxfp4.convert_moe_packed_tensors(blocks[e : e + 1], scales[e : e + 1], dtype=dtype)[0]
    return torch.nn.Parameter(out)


@contextmanager
def expertwise_mxfp4_dequantisation():
    """While loading, route transformers' MXFP4 dequantisation through `dequantise_expertwise`.

    Only the module attribute that transformers' Mxfp4Dequantize calls is swapped, for the duration of one
    from_pretrained; if this transformers has no such attribute the stock conversion runs unchanged."""
    try:
        from transformers.integrations import mxfp4
    except ImportError:  # a transformers without MXFP4 support: nothing to route
        yield
        return
    if not (hasattr(mxfp4, "dequantize_convertops") and hasattr(mxfp4, "convert_moe_packed_tensors")):
        yield
        return
    stock = mxfp4.dequantize_convertops
    mxfp4.dequantize_convertops = dequantise_expertwise
    try:
        yield
    finally:
        mxfp4.dequantize_convertops = stock


def mxfp4_layout(modules_to_not_convert: Sequence[str]) -> QuantLayout:
    """The MXFP4 layout; `modules_to_not_convert` are the family's module patterns left in float."""
    return QuantLayout(
        quant_method="mxfp4",
        label="MXFP4",
        data_suffix="_blocks",
        scale_suffix="_scales",
        storage_dtype="U8",
        values_per_byte=2,  # two FP4 codes per byte
        decode=dequantize_mxfp4,
        encode=quantize_mxfp4,
        decoded_shape=_decoded_shape,
        config_extra={"modules_to_not_convert": list(modules_to_not_convert)},
        loading=lambda: expertwise_mxfp4_dequantisation(),  # looked up at load time (the bench swaps it)
    )
