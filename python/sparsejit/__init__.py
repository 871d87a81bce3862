"""sparsejit from PyTorch: block-sparse attention, the DFSAttn mask build and token reordering
on torch CUDA tensors, through the stable C API of libsparsejit.so (runtime/sparsejit.h) and
ctypes, with no extension to compile.

    import sparsejit
    runtime = sparsejit.Runtime()                       # the current CUDA device, the default database
    builder = sparsejit.MaskBuilder(runtime)
    mask = builder.build(q, k, density=0.3)             # q, k: [B, N, H, D] bf16/fp16 on the GPU
    out = runtime.attention(q, k, v, mask)              # [B, N, H, D], like q

Tensors are 4-D, `layout="bnhd"` ([batch, tokens, heads, head_dim], most model code) or
"bhnd"; any strides with the head dim contiguous (views of a fused QKV projection work
without copies); bf16 or fp16; head dim 64, 96 or 128. Work runs on torch's current stream of
the tensors' device. Every failure raises SparsejitError, whose `status` is the C API's status
name and whose message says which argument and value were wrong.
"""
import collections
import ctypes
import threading

from . import _capi
from ._capi import API_VERSION, SparsejitError

__all__ = ["API_VERSION", "BlockMask", "MaskBuilder", "MaskCache", "MaskDecision", "MaskSchedule", "Runtime",
           "SparsejitError", "attention", "default_runtime", "token_order"]

_LAYOUTS = ("bnhd", "bhnd")
_ORDERS = {"raster": _capi.ORDER_RASTER, "tile3d": _capi.ORDER_TILE3D, "hilbert": _capi.ORDER_HILBERT}
_DIRECTIONS = {"gather": _capi.PERMUTE_GATHER, "scatter": _capi.PERMUTE_SCATTER}
_INT32_MAX = 2**31 - 1


_torch_module = None  # torch once imported: the calls run per layer and step, so they look it up once


def _torch():
    global _torch_module
    if _torch_module is None:
        try:
            import torch
        except ImportError as error:
            raise ImportError("sparsejit: this needs PyTorch (import torch failed)") from error
        _torch_module = torch
    return _torch_module


def _dtype_code(tensor, name):
    torch = _torch()
    codes = {torch.bfloat16: _capi.BF16, torch.float16: _capi.FP16}
    if tensor.dtype not in codes:
        raise TypeError(f"sparsejit: {name} is {tensor.dtype}; bfloat16 or float16 is supported")
    return codes[tensor.dtype]


def _shape(tensor, layout, name):
    """(batch, heads, tokens, head_dim) and the strides (batch, head, token) in elements."""
    if layout not in _LAYOUTS:
        raise ValueError(f"sparsejit: layout {layout!r}; 'bnhd' or 'bhnd'")
    if not isinstance(tensor, _torch().Tensor):
        raise TypeError(f"sparsejit: {name} is a {type(tensor).__name__}; a torch.Tensor is needed")
    if not tensor.is_cuda:
        raise ValueError(f"sparsejit: {name} is on {tensor.device}; it must be on a CUDA device")
    shape, stride = tensor.shape, tensor.stride()
    if len(shape) != 4:
        raise ValueError(f"sparsejit: {name} has {len(shape)} dims; 4 are needed ({layout})")
    if stride[3] != 1:
        raise ValueError(f"sparsejit: {name}'s head dim has stride {stride[3]}; it must be contiguous "
                         "(stride 1: call .contiguous())")
    if layout == "bnhd":
        batch, tokens, heads, head_dim = shape
        strides = (stride[0], stride[2], stride[1])
    else:
        batch, heads, tokens, head_dim = shape
        strides = stride[:3]
    if max(batch, heads, tokens, head_dim) > _INT32_MAX:
        raise ValueError(f"sparsejit: {name} has a dim over {_INT32_MAX} ({tuple(tensor.shape)})")
    return (batch, heads, tokens, head_dim), strides


def _describe(tensor, layout, name):
    """The sparsejit_tensor of a torch tensor in `layout`."""
    (batch, heads, tokens, head_dim), (batch_stride, head_stride, token_stride) = _shape(tensor, layout, name)
    return _capi.Tensor(tensor.data_ptr(), batch, heads, tokens, head_dim, batch_stride, head_stride, token_stride)


def _pointer(tensor, pointer_type):
    return ctypes.cast(tensor.data_ptr(), pointer_type) if tensor is not None else None


def _int32(value, name):
    """value as an int that a C int32_t holds, or a ValueError naming it (ctypes would truncate)."""
    if not isinstance(value, int) or not -2**31 <= value <= _INT32_MAX:
        raise ValueError(f"sparsejit: {name} = {value!r} is no 32-bit integer")
    return value


def _device_index(device):
    torch = _torch()
    if device is None:
        return torch.cuda.current_device()
    device = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if device.type != "cuda":
        raise ValueError(f"sparsejit: device {device}; a CUDA device is needed")
    return device.index if device.index is not None else torch.cuda.current_device()


def _on_device(tensors, device_index):
    """Raises where a (name, tensor) pair's tensor is not on cuda:device_index (None: skipped)."""
    for name, tensor in tensors:
        if tensor is not None and (not tensor.is_cuda or tensor.device.index != device_index):
            raise ValueError(f"sparsejit: {name} is on {tensor.device}; this runtime is on cuda:{device_index}")


def _stream(device_index):
    return ctypes.c_void_p(_torch().cuda.current_stream(device_index).cuda_stream)


class BlockMask:
    """A block mask on the GPU over blocks of block_q queries x block_kv keys (QB query blocks
    and KB key blocks per (batch, head); the format of runtime/sparsejit.h):
     - block-CSR: `count` int32 [B, H, QB] kept key blocks per row, listed ascending in `index`
       int32 [B, H, QB, max_kv_blocks] (entries past a row's count are ignored);
     - bitmask: `bits` int64 [B, H, QB, ceil(KB / 64)], bit k % 64 of word k / 64 set when key
       block k is kept (count and index None).
    Optional FG-Attn fine bits: `fine_bits` int64 [B, H, QB, max_kv_blocks], one word per kept
    block, a bit per sub-tile of 16 queries x fine_n keys. max_kv_blocks bounds every row's
    count and is the row pitch of index and fine_bits (default: their last dim; a bitmask
    without fine bits: the call's KB). A call checks that the tensors hold its rows.
    MaskBuilder.build makes one; a mask of your own goes the same way."""

    _layout = None  # the C layout of a mask MaskBuilder.build made (for to_bitmask)

    def __init__(self, *, block_q, block_kv, count=None, index=None, bits=None, max_kv_blocks=None, fine_n=0,
                 fine_bits=None):
        torch = _torch()
        if bits is None and (count is None or index is None):
            raise ValueError("sparsejit: a BlockMask needs count and index (block-CSR) or bits (bitmask)")
        if bits is not None and (count is not None or index is not None):
            raise ValueError("sparsejit: a BlockMask has either count and index or bits, not both")
        for name, tensor, dtype in (("count", count, torch.int32), ("index", index, torch.int32),
                                    ("bits", bits, torch.int64), ("fine_bits", fine_bits, torch.int64)):
            if tensor is None:
                continue
            if tensor.dtype != dtype or not tensor.is_cuda or not tensor.is_contiguous():
                raise ValueError(f"sparsejit: the mask's {name} must be a contiguous {dtype} CUDA tensor "
                                 f"(it is {tensor.dtype} on {tensor.device}"
                                 f"{'' if tensor.is_contiguous() else ', not contiguous'})")
        if (fine_n > 0) != (fine_bits is not None):
            raise ValueError("sparsejit: fine_bits and fine_n > 0 go together")
        self.block_q, self.block_kv, self.fine_n = block_q, block_kv, fine_n
        self.count, self.index, self.bits, self.fine_bits = count, index, bits, fine_bits
        if max_kv_blocks is None and index is not None:
            max_kv_blocks = index.shape[-1]
        elif max_kv_blocks is None and fine_bits is not None:
            max_kv_blocks = fine_bits.shape[-1]
        self.max_kv_blocks = max_kv_blocks  # None: a bitmask without fine bits, KB of the call

    @property
    def form(self):
        return "bitmask" if self.bits is not None else "csr"

    def _c(self, kv_blocks):
        """The sparsejit_block_mask, for a call with kv_blocks key blocks."""
        return _capi.BlockMask(
            _capi.MASK_BITMASK if self.bits is not None else _capi.MASK_BLOCK_CSR, self.block_q, self.block_kv,
            _pointer(self.count, _capi.c_int32_p), _pointer(self.index, _capi.c_int32_p),
            _pointer(self.bits, _capi.c_uint64_p), self.bits.shape[-1] if self.bits is not None else 0,
            kv_blocks if self.max_kv_blocks is None else self.max_kv_blocks, self.fine_n,
            _pointer(self.fine_bits, _capi.c_uint64_p))

    def _check_sizes(self, batch, heads, tokens_q, tokens_kv, device_index):
        """Raises where the mask's tensors do not hold the rows of a call of that shape (the
        kernels would read past them) or are on another device; returns KB."""
        q_blocks, kv_blocks = -(-tokens_q // self.block_q), -(-tokens_kv // self.block_kv)
        rows = batch * heads * q_blocks
        pitch = kv_blocks if self.max_kv_blocks is None else self.max_kv_blocks
        expected = {"count": rows, "index": rows * pitch, "bits": rows * -(-kv_blocks // 64),
                    "fine_bits": rows * pitch}
        for name, tensor in (("count", self.count), ("index", self.index), ("bits", self.bits),
                             ("fine_bits", self.fine_bits)):
            if tensor is not None and tensor.numel() != expected[name]:
                raise ValueError(f"sparsejit: the mask's {name} holds {tensor.numel()} entries; a call of "
                                 f"[B={batch}, H={heads}] x {tokens_q} queries x {tokens_kv} keys over blocks of "
                                 f"{self.block_q} x {self.block_kv} ({q_blocks} x {kv_blocks} blocks, "
                                 f"max_kv_blocks {pitch}) needs {expected[name]}")
        _on_device([(f"the mask's {name}", tensor) for name, tensor in
                    (("count", self.count), ("index", self.index), ("bits", self.bits),
                     ("fine_bits", self.fine_bits))], device_index)
        return kv_blocks

    def __repr__(self):
        return (f"BlockMask({self.form}, blocks {self.block_q}x{self.block_kv}, max_kv_blocks {self.max_kv_blocks}"
                f"{f', fine {self.fine_n}' if self.fine_n else ''})")


class _Owned:
    """Owns a C object: close() (or leaving a `with` block) destroys it; nothing is freed
    behind the caller's back, since GPU work may still use it."""

    _destroy_name = ""  # the C function that destroys the handle
    _what = ""  # what the object is, for the error once it is closed
    _handle = None
    device = None  # the CUDA device index its work runs on

    def close(self):
        """Waits for the device's work (the C object must outlive what it launched), then
        destroys it. Closing twice does nothing."""
        if self._handle:
            self._before_close()
            _torch().cuda.synchronize(self.device)
            getattr(_capi.lib, self._destroy_name)(self._handle)
            self._handle = None

    def _before_close(self):
        pass

    def _live(self):
        """The handle, or a ValueError once closed."""
        if not self._handle:
            raise ValueError(f"sparsejit: the {self._what} is closed")
        return self._handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Runtime(_Owned):
    """sparsejit on one GPU with a tuning database (default: $SPARSEJIT_DB, else
    ~/.cache/sparsejit/tuning.db; `use_database=False`: none, every kernel compiled here with
    the built-in defaults). It only looks configurations up (tune with `sparsejit tune`), and
    stores the kernels it had to compile. Safe to share between threads. close() closes its
    MaskBuilders first."""

    _destroy_name = "sparsejit_runtime_destroy"
    _what = "runtime"

    def __init__(self, device=None, database=None, use_database=True):
        import weakref

        self.device = _device_index(device)
        self._builders = weakref.WeakSet()  # closed before the runtime: they use its context
        _torch().cuda.init()  # the primary context that torch and sparsejit share
        options = _capi.RuntimeOptions()
        _capi.lib.sparsejit_runtime_options_init(ctypes.byref(options))
        options.device = self.device
        options.database_path = None if database is None else str(database).encode()
        options.use_database = 1 if use_database else 0
        handle = ctypes.c_void_p()
        _capi.check(_capi.lib.sparsejit_runtime_create(ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle

    def _before_close(self):
        for builder in list(self._builders):
            builder.close()

    def _attention_args(self, q, k, v, mask, layout, scale, out, lse, checked):
        if not isinstance(mask, BlockMask):
            raise TypeError(f"sparsejit: mask is a {type(mask).__name__}; a sparsejit.BlockMask is needed")
        args = _capi.AttentionArgs()
        _capi.lib.sparsejit_attention_args_init(ctypes.byref(args))
        args.q, args.k, args.v, args.o = (_describe(t, layout, name) for name, t in
                                          (("q", q), ("k", k), ("v", v), ("out", out)))
        args.dtype = _dtype_code(q, "q")
        for name, tensor in (("k", k), ("v", v), ("out", out)):
            if tensor.dtype != q.dtype:
                raise TypeError(f"sparsejit: {name} is {tensor.dtype} and q {q.dtype}; they must agree")
        _on_device([("q", q), ("k", k), ("v", v), ("out", out), ("lse", lse)], self.device)
        if lse is not None and (lse.dtype != _torch().float32 or not lse.is_contiguous() or
                                lse.numel() != args.q.batch * args.q.heads * args.q.tokens):
            raise ValueError("sparsejit: lse must be a contiguous float32 tensor of B * H * Nq entries")
        kv_blocks = mask._check_sizes(args.q.batch, args.q.heads, args.q.tokens, args.k.tokens, self.device)
        args.lse = _pointer(lse, _capi.c_float_p)
        args.mask = mask._c(kv_blocks)
        args.softmax_scale = 0.0 if scale is None else float(scale)
        args.checked = 1 if checked else 0
        return args

    def attention(self, q, k, v, mask, *, layout="bnhd", scale=None, out=None, return_lse=False, checked=False):
        """O = softmax(Q K^T * scale) V over the kept blocks of `mask` (a BlockMask), per
        (batch, head). q [B, Nq, H, D], k and v [B, Nkv, H, D] (layout "bnhd"; "bhnd":
        [B, H, N, D]); scale defaults to 1 / sqrt(D). Returns O (in `out` if given, else a new
        tensor shaped and strided like q) and, with return_lse, the float32 log-sum-exp
        [B, H, Nq] (natural log; -inf where a row keeps nothing, whose O is 0). checked=True
        copies the mask to the host and checks every entry first (slow: for debugging a mask)."""
        torch = _torch()
        lse = None
        if out is None or return_lse:
            (batch, heads, tokens, _), _ = _shape(q, layout, "q")
            if out is None:
                out = torch.empty_like(q)
            if return_lse:
                lse = torch.empty((batch, heads, tokens), dtype=torch.float32, device=q.device)
        args = self._attention_args(q, k, v, mask, layout, scale, out, lse, checked)
        _capi.check(_capi.lib.sparsejit_attention(self._live(), ctypes.byref(args), _stream(self.device)))
        return (out, lse) if return_lse else out

    def lookup(self, q, k, v, mask, *, layout="bnhd", scale=None):
        """Which configuration attention() would use for these arguments, and where it came
        from (a dict: level, tile, the call's problem key, the problem and GPU it was tuned
        for), without running anything."""
        args = self._attention_args(q, k, v, mask, layout, scale, q, None, False)
        choice = _capi.AttentionChoice()
        _capi.check(_capi.lib.sparsejit_attention_lookup(self._live(), ctypes.byref(args), ctypes.byref(choice)))
        return {"level": _capi.lib.sparsejit_lookup_level_name(choice.level).decode(), "block_m": choice.block_m,
                "block_n": choice.block_n, "warps": choice.warps, "problem_key": choice.problem_key.decode(),
                "tuned_for": choice.source_key.decode(), "tuned_on": choice.source_gpu.decode()}

    def permute(self, tensors, order, *, direction="gather", source_layout="bnhd", destination_layout="bhnd",
                out=None):
        """Moves the tokens of up to three tensors of one shape (Q, K, V) into a token order
        (direction "gather": destination token i is source token order[i]) or back out of it
        ("scatter"), changing the layout on the way, in one launch. `order` is an int32 CUDA
        tensor of N entries (token_order's, moved to the GPU). Returns the destination tensors
        (`out` if given, else new contiguous ones in destination_layout)."""
        torch = _torch()
        tensors = list(tensors)
        if not 1 <= len(tensors) <= 3:
            raise ValueError(f"sparsejit: {len(tensors)} tensors; 1 to 3 move in one launch")
        if direction not in _DIRECTIONS:
            raise ValueError(f"sparsejit: direction {direction!r}; 'gather' or 'scatter'")
        dims, _ = _shape(tensors[0], source_layout, "tensors[0]")
        if (not isinstance(order, torch.Tensor) or order.dtype != torch.int32 or order.dim() != 1 or
                not order.is_contiguous() or order.numel() != dims[2]):
            raise ValueError(f"sparsejit: order must be a contiguous 1-D int32 CUDA tensor of the {dims[2]} tokens")
        if out is None:
            batch, heads, tokens, head_dim = dims
            shape = (batch, tokens, heads, head_dim) if destination_layout == "bnhd" else (batch, heads, tokens, head_dim)
            out = [torch.empty(shape, dtype=tensors[0].dtype, device=tensors[0].device) for _ in tensors]
        out = list(out)
        if len(out) != len(tensors):
            raise ValueError(f"sparsejit: {len(tensors)} tensors but {len(out)} outputs")
        args = _capi.PermuteArgs()
        args.tensor_count = len(tensors)
        for i, (source, destination) in enumerate(zip(tensors, out)):
            args.source[i] = _describe(source, source_layout, f"tensors[{i}]")
            args.destination[i] = _describe(destination, destination_layout, f"out[{i}]")
            _dtype_code(source, f"tensors[{i}]")
            if destination.dtype != source.dtype:
                raise TypeError(f"sparsejit: out[{i}] is {destination.dtype} and tensors[{i}] {source.dtype}")
            _on_device([(f"tensors[{i}]", source), (f"out[{i}]", destination)], self.device)
        _on_device([("order", order)], self.device)
        args.permutation = _pointer(order, _capi.c_int32_p)
        args.direction = _DIRECTIONS[direction]
        _capi.check(_capi.lib.sparsejit_permute_tokens(self._live(), ctypes.byref(args), _stream(self.device)))
        return out


class MaskBuilder(_Owned):
    """Builds DFSAttn block masks from Q and K on the runtime's GPU (mean-pooled tiles, block
    scores, top-k or a cumulative threshold, always-kept first, diagonal and text blocks,
    optional fine bits). Owns a workspace that only grows: one thread at a time, and builds on
    different streams must be ordered by the caller. Each mask it returns lives in tensors of
    its own."""

    _destroy_name = "sparsejit_mask_builder_destroy"
    _what = "mask builder"

    def __init__(self, runtime):
        self.runtime, self.device = runtime, runtime.device
        handle = ctypes.c_void_p()
        _capi.check(_capi.lib.sparsejit_mask_builder_create(runtime._live(), ctypes.byref(handle)))
        self._handle = handle
        runtime._builders.add(self)

    def _live(self):
        handle = super()._live()
        self.runtime._live()  # a builder works only while its runtime is open
        return handle

    def build(self, q, k, *, layout="bnhd", density=0.3, threshold=0.0, block=128, tile=16, text_blocks=0,
              fine_n=0, fine_share=0.9, head_densities=None, first_block_by_score=False, scale=None):
        """A block-CSR BlockMask of q [B, Nq, H, D] and k [B, Nkv, H, D] (layout as attention's):
        each query block keeps its ceil(density * KB) best key blocks, or with threshold > 0 the
        fewest whose scores reach that share of the row's mass; head_densities (one per head)
        gives each head its own density (SVOO profiles). The first key block (unless
        first_block_by_score), the diagonal one and the last text_blocks are always kept.
        fine_n (8, 16 or 32) adds fine bits keeping fine_share of each scored pair's mass."""
        torch = _torch()
        handle = self._live()
        inputs = _capi.MaskInputs(0, _describe(q, layout, "q"), _describe(k, layout, "k"),
                                  0.0 if scale is None else float(scale))
        inputs.dtype = _dtype_code(q, "q")
        if k.dtype != q.dtype:
            raise TypeError(f"sparsejit: k is {k.dtype} and q {q.dtype}; they must agree")
        _on_device([("q", q), ("k", k)], self.device)
        options = _capi.MaskOptions()
        _capi.lib.sparsejit_mask_options_init(ctypes.byref(options))
        options.block_q = options.block_kv = block
        options.tile = tile
        options.density = 0.0 if threshold > 0 else density
        options.threshold = threshold
        options.text_blocks = text_blocks
        options.fine_n = fine_n
        options.fine_share = fine_share
        layout_out = _capi.MaskLayout()
        per_head = None
        if head_densities is not None:
            values = [float(d) for d in head_densities]
            per_head = ((ctypes.c_double * len(values))(*values), len(values))
            _capi.check(_capi.lib.sparsejit_mask_layout_of_per_head(ctypes.byref(inputs), ctypes.byref(options),
                                                                    per_head[0], per_head[1],
                                                                    ctypes.byref(layout_out)))
        else:
            _capi.check(_capi.lib.sparsejit_mask_layout_of(ctypes.byref(inputs), ctypes.byref(options),
                                                           ctypes.byref(layout_out)))
        (batch, heads, _, _), _ = _shape(q, layout, "q")
        rows_shape = (batch, heads, layout_out.q_blocks)
        width = max(layout_out.max_kv_blocks, 1)
        count = torch.empty(rows_shape, dtype=torch.int32, device=q.device)
        index = torch.empty(rows_shape + (width,), dtype=torch.int32, device=q.device)
        fine_bits = torch.empty(rows_shape + (width,), dtype=torch.int64, device=q.device) if fine_n else None
        mask = _capi.BlockMask()
        mask.kv_block_count = _pointer(count, _capi.c_int32_p)
        mask.kv_block_index = _pointer(index, _capi.c_int32_p)
        mask.fine_bits = _pointer(fine_bits, _capi.c_uint64_p)
        _capi.check(_capi.lib.sparsejit_mask_builder_set_first_block_by_score(handle, 1 if first_block_by_score else 0))
        stream = _stream(self.device)
        if per_head is not None:
            _capi.check(_capi.lib.sparsejit_mask_build_per_head(handle, ctypes.byref(inputs), ctypes.byref(options),
                                                                per_head[0], per_head[1], stream,
                                                                ctypes.byref(mask), None))
        else:
            _capi.check(_capi.lib.sparsejit_mask_build(handle, ctypes.byref(inputs), ctypes.byref(options), stream,
                                                       ctypes.byref(mask), None))
        built = BlockMask(block_q=mask.block_q, block_kv=mask.block_kv, count=count, index=index,
                          max_kv_blocks=mask.max_kv_blocks, fine_n=mask.fine_n, fine_bits=fine_bits)
        built._layout = layout_out
        return built

    def to_bitmask(self, mask):
        """The bitmask form of a mask this builder built (block-CSR): a BlockMask whose `bits`
        take ceil(KB / 64) words a row instead of max_kv_blocks int32 (151 MB for the masks of
        all 40 layers of Wan2.1-14B at 720p, both guidance passes, against 1.3 GB of lists at
        density 0.3), for keeping masks across diffusion steps; the same fine bits."""
        torch = _torch()
        handle = self._live()
        layout = getattr(mask, "_layout", None)
        if layout is None:
            raise ValueError("sparsejit: to_bitmask takes a mask that MaskBuilder.build made (it needs its layout)")
        _on_device([("the mask's count", mask.count)], self.device)
        bits = torch.empty(tuple(mask.count.shape) + (layout.kv_block_words,), dtype=torch.int64,
                           device=mask.count.device)
        converted = _capi.BlockMask()
        _capi.check(_capi.lib.sparsejit_mask_to_bitmask(handle, ctypes.byref(mask._c(layout.kv_blocks)),
                                                        ctypes.byref(layout), _pointer(bits, _capi.c_uint64_p),
                                                        _stream(self.device), ctypes.byref(converted)))
        return BlockMask(block_q=mask.block_q, block_kv=mask.block_kv, bits=bits,
                         max_kv_blocks=converted.max_kv_blocks, fine_n=mask.fine_n, fine_bits=mask.fine_bits)


_default_runtimes = {}  # device index -> the Runtime of default_runtime
_default_runtimes_lock = threading.Lock()


def default_runtime(device=None):
    """The Runtime that sparsejit.attention uses on `device` (default: torch's current one),
    made on first use with the default database ($SPARSEJIT_DB, else ~/.cache/sparsejit/tuning.db)
    and kept for the process."""
    index = _device_index(device)
    with _default_runtimes_lock:
        runtime = _default_runtimes.get(index)
        if runtime is None or not runtime._handle:
            runtime = _default_runtimes[index] = Runtime(index)
        return runtime


def attention(q, k, v, mask, *, layout="bnhd", scale=None):
    """Runtime.attention on the default runtime of q's device, through the custom operator
    torch.ops.sparsejit.attention: torch.compile(fullgraph=True) takes a model that calls it
    without a graph break (it has no backward). Returns a new tensor shaped like q."""
    torch = _torch()
    if not isinstance(mask, BlockMask):
        raise TypeError(f"sparsejit: mask is a {type(mask).__name__}; a sparsejit.BlockMask is needed")
    if not hasattr(torch.library, "custom_op"):
        raise RuntimeError(f"sparsejit: attention() needs PyTorch 2.4 or newer (torch.library.custom_op; this is "
                           f"{torch.__version__}); Runtime.attention works without it")
    return torch.ops.sparsejit.attention(q, k, v, mask.count, mask.index, mask.bits, mask.fine_bits, mask.block_q,
                                         mask.block_kv, -1 if mask.max_kv_blocks is None else mask.max_kv_blocks,
                                         mask.fine_n, layout, 0.0 if scale is None else float(scale))


MaskDecision = collections.namedtuple("MaskDecision", "action window density threshold")
MaskDecision.__doc__ = """What a layer does at a step: action "dense", "refresh" (build the mask at
`density`, or at `threshold` in a threshold schedule) or "reuse" (the mask of refresh window
`window`); window -1, density and threshold 0 when dense."""


class MaskSchedule:
    """When each layer builds its mask, reuses it or runs dense across a sampler's steps
    (DFSAttn's mask caching with an adaptive ratio; runtime/mask_schedule.h): steps
    0..dense_steps-1 run dense; from then on refresh windows of refresh_interval steps, window w
    building its mask at its first step at densities[min(w, len - 1)] (or thresholds[...] in
    threshold mode: give thresholds and densities=()) and reusing it for the rest of the
    window; the dense_layers run dense at every step. Unset arguments take the DFSAttn code's
    defaults: 50 steps, dense for 12, refresh every 12, densities (0.3, 0.2, 0.1), layer 0
    dense. Host only; a bad schedule raises SparsejitError at once, naming the field."""

    def __init__(self, steps=None, dense_steps=None, refresh_interval=None, densities=None, thresholds=(),
                 dense_layers=None):
        defaults = _capi.MaskSchedule()
        _capi.lib.sparsejit_mask_schedule_init(ctypes.byref(defaults))
        if densities is None:  # the defaults, unless thresholds take their place
            densities = () if thresholds else defaults.densities[:defaults.density_count]
        self._values = {
            "steps": _int32(defaults.steps if steps is None else steps, "steps"),
            "dense_steps": _int32(defaults.dense_steps if dense_steps is None else dense_steps, "dense_steps"),
            "refresh_interval": _int32(defaults.refresh_interval if refresh_interval is None else refresh_interval,
                                       "refresh_interval"),
            "densities": tuple(float(d) for d in densities),
            "thresholds": tuple(float(t) for t in thresholds),
            "dense_layers": tuple(_int32(layer, "dense_layers") for layer in
                                  (defaults.dense_layers[:defaults.dense_layer_count] if dense_layers is None
                                   else dense_layers)),
        }
        values = self._values
        self._arrays = [(ctypes.c_double * len(values["densities"]))(*values["densities"]),
                        (ctypes.c_double * len(values["thresholds"]))(*values["thresholds"]),
                        (ctypes.c_int32 * len(values["dense_layers"]))(*values["dense_layers"])]  # alive with it
        self._c = _capi.MaskSchedule(values["steps"], values["dense_steps"], values["refresh_interval"],
                                     ctypes.cast(self._arrays[0], _capi.c_double_p), len(values["densities"]),
                                     ctypes.cast(self._arrays[1], _capi.c_double_p), len(values["thresholds"]),
                                     ctypes.cast(self._arrays[2], _capi.c_int32_p), len(values["dense_layers"]))
        self.decide(0, 0)  # validates the schedule now

    # Read only: the C schedule is made once, at construction.
    steps = property(lambda self: self._values["steps"])
    dense_steps = property(lambda self: self._values["dense_steps"])
    refresh_interval = property(lambda self: self._values["refresh_interval"])
    densities = property(lambda self: self._values["densities"])
    thresholds = property(lambda self: self._values["thresholds"])
    dense_layers = property(lambda self: self._values["dense_layers"])

    def decide(self, step, layer):
        """The MaskDecision of `layer` at `step` (0 <= step < steps)."""
        step, layer = _int32(step, "step"), _int32(layer, "layer")
        decision = _capi.MaskDecision()
        _capi.check(_capi.lib.sparsejit_mask_schedule_decide(ctypes.byref(self._c), step, layer,
                                                             ctypes.byref(decision)))
        return MaskDecision(_capi.MASK_ACTIONS[decision.action], decision.window, decision.density,
                            decision.threshold)

    def __repr__(self):
        return (f"MaskSchedule(steps={self.steps}, dense_steps={self.dense_steps}, "
                f"refresh_interval={self.refresh_interval}, densities={self.densities}, "
                f"thresholds={self.thresholds}, dense_layers={self.dense_layers})")


class MaskCache:
    """The masks of a sampler's layers kept across its steps, as a MaskSchedule says (what
    runtime/mask_cache.h does in C++): prepare() returns None where the layer runs dense at that
    step (run dense attention there), else its mask: built at a refresh (or where the window's
    mask is missing), in the compact bitmask form unless compact=False, and returned again for
    the rest of the window. Each guidance pass (say 0 conditional, 1 unconditional; name it on
    every call) keeps masks of its own. A mask is kept for one shape of Q and K: clear() before
    a video of another shape. `build_options` are MaskBuilder.build's but density and
    threshold, which the schedule gives."""

    def __init__(self, builder, schedule=None, *, compact=True, **build_options):
        for given in ("density", "threshold", "head_densities"):
            if given in build_options:
                raise ValueError(f"sparsejit: MaskCache takes no {given}: the schedule says each window's")
        self.builder = builder
        self.schedule = MaskSchedule() if schedule is None else schedule
        self.compact = compact
        self.build_options = build_options
        self._masks = {}  # (layer, guidance pass) -> (window, BlockMask, (Q's shape, K's shape))

    def prepare(self, step, layer, q, k, *, guidance_pass):
        if not isinstance(guidance_pass, int) or guidance_pass < 0:
            raise ValueError(f"sparsejit: guidance_pass = {guidance_pass!r}; 0, 1, ... (say 0 conditional, "
                             "1 unconditional)")
        decision = self.schedule.decide(step, layer)
        if decision.action == "dense":
            return None
        key = (layer, guidance_pass)
        shapes = (tuple(q.shape), tuple(k.shape))
        kept = self._masks.get(key)
        if kept is not None and kept[2] != shapes:
            raise ValueError(f"sparsejit: layer {layer} (guidance pass {guidance_pass}) keeps a mask of Q {kept[2][0]} "
                             f"and K {kept[2][1]}, not {shapes[0]} and {shapes[1]}: clear() the cache for a new shape")
        if decision.action == "refresh" or kept is None or kept[0] != decision.window:
            mask = self.builder.build(q, k, density=decision.density, threshold=decision.threshold,
                                      **self.build_options)
            if self.compact:
                mask = self.builder.to_bitmask(mask)
            kept = self._masks[key] = (decision.window, mask, shapes)
        return kept[1]

    def clear(self):
        """Drops every kept mask (a new video: the next steps build again)."""
        self._masks.clear()


def token_order(kind, frames, height, width, extra_tokens=0):
    """The gather order of a frames x height x width latent grid plus extra (text) tokens kept
    last: an int32 CPU tensor whose entry i is the original token (raster numbering) put at
    position i. kind: "hilbert", "tile3d" or "raster". Host only; move it to the GPU for
    Runtime.permute."""
    torch = _torch()
    if kind not in _ORDERS:
        raise ValueError(f"sparsejit: token order {kind!r}; 'hilbert', 'tile3d' or 'raster'")
    tokens = frames * height * width + extra_tokens
    order = torch.empty(max(tokens, 1), dtype=torch.int32)
    _capi.check(_capi.lib.sparsejit_token_order(_ORDERS[kind], frames, height, width, extra_tokens,
                                                _pointer(order, _capi.c_int32_p), order.numel()))
    return order[:tokens]


try:
    _torch()  # the custom operator needs PyTorch at import; without it the rest imports it lazily
    if hasattr(_torch_module.library, "custom_op"):  # PyTorch 2.4 and newer
        from . import _ops  # noqa: E402,F401  registers torch.ops.sparsejit.attention
except ImportError:
    pass  # no PyTorch: the schedule and the C API's host calls still work
except Exception as error:  # a PyTorch that fails to load (its CUDA libraries, say)
    import warnings

    warnings.warn(f"sparsejit: PyTorch failed to import ({error}); sparsejit.attention is not registered")
