"""torch.ops.sparsejit.attention: sparse attention as a PyTorch custom operator, so that
torch.compile keeps a model that calls it in one graph (the fake implementation below gives the
output's shape and strides without running anything; there is no backward). It runs on
the default runtime of q's device (sparsejit.default_runtime). sparsejit.attention is the way
to call it with a BlockMask."""
from typing import Optional

import torch

from . import BlockMask, default_runtime


@torch.library.custom_op("sparsejit::attention", mutates_args=(), device_types="cuda")
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor],
              index: Optional[torch.Tensor], bits: Optional[torch.Tensor], fine_bits: Optional[torch.Tensor],
              block_q: int, block_kv: int, max_kv_blocks: int, fine_n: int, layout: str,
              scale: float) -> torch.Tensor:
    """The mask's fields as BlockMask has them (max_kv_blocks -1: None; scale 0: 1 / sqrt(D))."""
    mask = BlockMask(block_q=block_q, block_kv=block_kv, count=count, index=index, bits=bits,
                     max_kv_blocks=None if max_kv_blocks < 0 else max_kv_blocks, fine_n=fine_n, fine_bits=fine_bits)
    return default_runtime(q.device).attention(q, k, v, mask, layout=layout, scale=None if scale == 0 else scale)


@attention.register_fake
def _(q, k, v, count, index, bits, fine_bits, block_q, block_kv, max_kv_blocks, fine_n, layout, scale):
    return torch.empty_like(q)  # what the real one returns: a new tensor shaped and strided like q
