"""ctypes declarations of sparsejit's stable C API (runtime/sparsejit.h, API version 1).

Every struct here mirrors its C definition field by field (tests/python checks the sizes and
offsets against the header compiled by the C compiler); every function gets its argtypes and
restype, so ctypes converts and checks the arguments. Nothing here needs PyTorch or a GPU.

The library is $SPARSEJIT_LIBRARY (a path) where set, else libsparsejit.so.0 from the
dynamic loader's search path (after `cmake --install build --prefix P`: LD_LIBRARY_PATH=P/lib).
"""
import ctypes
import os

API_VERSION = 1  # SPARSEJIT_API_VERSION of the header these declarations mirror

OK = 0  # sparsejit_status; sparsejit_status_name() names the others
# sparsejit_dtype, sparsejit_layout, sparsejit_token_order_kind, sparsejit_permute_direction,
# sparsejit_mask_form
BF16, FP16 = 0, 1
LAYOUT_BHND, LAYOUT_BNHD = 0, 1
ORDER_RASTER, ORDER_TILE3D, ORDER_HILBERT = 0, 1, 2
PERMUTE_GATHER, PERMUTE_SCATTER = 0, 1
MASK_BLOCK_CSR, MASK_BITMASK = 0, 1
MASK_ACTIONS = {0: "dense", 1: "refresh", 2: "reuse"}  # sparsejit_mask_action

c_int32_p = ctypes.POINTER(ctypes.c_int32)
c_uint64_p = ctypes.POINTER(ctypes.c_uint64)
c_float_p = ctypes.POINTER(ctypes.c_float)
c_double_p = ctypes.POINTER(ctypes.c_double)
c_stream = ctypes.c_void_p  # sparsejit_stream: a CUstream / cudaStream_t


class Tensor(ctypes.Structure):  # sparsejit_tensor
    _fields_ = [("data", ctypes.c_void_p), ("batch", ctypes.c_int32), ("heads", ctypes.c_int32),
                ("tokens", ctypes.c_int32), ("head_dim", ctypes.c_int32), ("batch_stride", ctypes.c_int64),
                ("head_stride", ctypes.c_int64), ("token_stride", ctypes.c_int64)]


class RuntimeOptions(ctypes.Structure):  # sparsejit_runtime_options
    _fields_ = [("device", ctypes.c_int32), ("database_path", ctypes.c_char_p), ("use_database", ctypes.c_int32)]


class PermuteArgs(ctypes.Structure):  # sparsejit_permute_args
    _fields_ = [("tensor_count", ctypes.c_int32), ("source", Tensor * 3), ("destination", Tensor * 3),
                ("permutation", c_int32_p), ("direction", ctypes.c_int)]


class BlockMask(ctypes.Structure):  # sparsejit_block_mask
    _fields_ = [("form", ctypes.c_int), ("block_q", ctypes.c_int32), ("block_kv", ctypes.c_int32),
                ("kv_block_count", c_int32_p), ("kv_block_index", c_int32_p), ("kv_block_bits", c_uint64_p),
                ("kv_block_words", ctypes.c_int32), ("max_kv_blocks", ctypes.c_int32), ("fine_n", ctypes.c_int32),
                ("fine_bits", c_uint64_p)]


class MaskInputs(ctypes.Structure):  # sparsejit_mask_inputs
    _fields_ = [("dtype", ctypes.c_int), ("q", Tensor), ("k", Tensor), ("softmax_scale", ctypes.c_float)]


class MaskOptions(ctypes.Structure):  # sparsejit_mask_options
    _fields_ = [("block_q", ctypes.c_int32), ("block_kv", ctypes.c_int32), ("tile", ctypes.c_int32),
                ("density", ctypes.c_double), ("threshold", ctypes.c_double), ("text_blocks", ctypes.c_int32),
                ("fine_n", ctypes.c_int32), ("fine_share", ctypes.c_double)]


class MaskLayout(ctypes.Structure):  # sparsejit_mask_layout
    _fields_ = [("q_blocks", ctypes.c_int32), ("kv_blocks", ctypes.c_int32), ("max_kv_blocks", ctypes.c_int32),
                ("top_k", ctypes.c_int32), ("kv_block_words", ctypes.c_int32), ("rows", ctypes.c_int64)]


class MaskSchedule(ctypes.Structure):  # sparsejit_mask_schedule
    _fields_ = [("steps", ctypes.c_int32), ("dense_steps", ctypes.c_int32), ("refresh_interval", ctypes.c_int32),
                ("densities", c_double_p), ("density_count", ctypes.c_int32), ("thresholds", c_double_p),
                ("threshold_count", ctypes.c_int32), ("dense_layers", c_int32_p), ("dense_layer_count", ctypes.c_int32)]


class MaskDecision(ctypes.Structure):  # sparsejit_mask_decision
    _fields_ = [("action", ctypes.c_int), ("window", ctypes.c_int32), ("density", ctypes.c_double),
                ("threshold", ctypes.c_double)]


class AttentionArgs(ctypes.Structure):  # sparsejit_attention_args
    _fields_ = [("dtype", ctypes.c_int), ("q", Tensor), ("k", Tensor), ("v", Tensor), ("o", Tensor),
                ("lse", c_float_p), ("mask", BlockMask), ("softmax_scale", ctypes.c_float),
                ("checked", ctypes.c_int32)]


class AttentionChoice(ctypes.Structure):  # sparsejit_attention_choice
    _fields_ = [("level", ctypes.c_int), ("block_m", ctypes.c_int32), ("block_n", ctypes.c_int32),
                ("warps", ctypes.c_int32), ("problem_key", ctypes.c_char_p), ("source_key", ctypes.c_char_p),
                ("source_gpu", ctypes.c_char_p)]


STRUCTS = {"sparsejit_tensor": Tensor, "sparsejit_runtime_options": RuntimeOptions,
           "sparsejit_permute_args": PermuteArgs, "sparsejit_block_mask": BlockMask,
           "sparsejit_mask_inputs": MaskInputs, "sparsejit_mask_options": MaskOptions,
           "sparsejit_mask_layout": MaskLayout, "sparsejit_mask_schedule": MaskSchedule,
           "sparsejit_mask_decision": MaskDecision, "sparsejit_attention_args": AttentionArgs,
           "sparsejit_attention_choice": AttentionChoice}

_status = ctypes.c_int
_p = ctypes.POINTER
_void_pp = _p(ctypes.c_void_p)
# name: (restype, argtypes)
_FUNCTIONS = {
    "sparsejit_last_error_message": (ctypes.c_char_p, []),
    "sparsejit_status_name": (ctypes.c_char_p, [_status]),
    "sparsejit_api_version": (ctypes.c_int, []),
    "sparsejit_tensor_dense": (Tensor, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32, ctypes.c_int32,
                                        ctypes.c_int32, ctypes.c_int32]),
    "sparsejit_runtime_options_init": (None, [_p(RuntimeOptions)]),
    "sparsejit_runtime_create": (_status, [_p(RuntimeOptions), _void_pp]),
    "sparsejit_runtime_destroy": (None, [ctypes.c_void_p]),
    "sparsejit_token_order": (_status, [ctypes.c_int, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                        ctypes.c_int32, c_int32_p, ctypes.c_int64]),
    "sparsejit_permute_tokens": (_status, [ctypes.c_void_p, _p(PermuteArgs), c_stream]),
    "sparsejit_mask_options_init": (None, [_p(MaskOptions)]),
    "sparsejit_mask_layout_of": (_status, [_p(MaskInputs), _p(MaskOptions), _p(MaskLayout)]),
    "sparsejit_mask_builder_create": (_status, [ctypes.c_void_p, _void_pp]),
    "sparsejit_mask_builder_set_first_block_by_score": (_status, [ctypes.c_void_p, ctypes.c_int32]),
    "sparsejit_mask_builder_destroy": (None, [ctypes.c_void_p]),
    "sparsejit_mask_build": (_status, [ctypes.c_void_p, _p(MaskInputs), _p(MaskOptions), c_stream,
                                       _p(BlockMask), _p(MaskLayout)]),
    "sparsejit_mask_layout_of_per_head": (_status, [_p(MaskInputs), _p(MaskOptions), c_double_p, ctypes.c_int32,
                                                    _p(MaskLayout)]),
    "sparsejit_mask_build_per_head": (_status, [ctypes.c_void_p, _p(MaskInputs), _p(MaskOptions), c_double_p,
                                                ctypes.c_int32, c_stream, _p(BlockMask), _p(MaskLayout)]),
    "sparsejit_mask_to_bitmask": (_status, [ctypes.c_void_p, _p(BlockMask), _p(MaskLayout), c_uint64_p, c_stream,
                                            _p(BlockMask)]),
    "sparsejit_mask_schedule_init": (None, [_p(MaskSchedule)]),
    "sparsejit_mask_schedule_decide": (_status, [_p(MaskSchedule), ctypes.c_int32, ctypes.c_int32, _p(MaskDecision)]),
    "sparsejit_attention_args_init": (None, [_p(AttentionArgs)]),
    "sparsejit_attention_validate": (_status, [_p(AttentionArgs)]),
    "sparsejit_attention": (_status, [ctypes.c_void_p, _p(AttentionArgs), c_stream]),
    "sparsejit_lookup_level_name": (ctypes.c_char_p, [ctypes.c_int]),
    "sparsejit_attention_lookup": (_status, [ctypes.c_void_p, _p(AttentionArgs), _p(AttentionChoice)]),
}


class SparsejitError(RuntimeError):
    """A sparsejit call that failed: `status` is its sparsejit_status name, the message what
    sparsejit_last_error_message() said."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status


def _load():
    path = os.environ.get("SPARSEJIT_LIBRARY")
    try:
        library = ctypes.CDLL(path or "libsparsejit.so.0")
    except OSError as error:
        where = f"$SPARSEJIT_LIBRARY ({path})" if path else "the loader's path (libsparsejit.so.0)"
        raise ImportError(f"sparsejit: cannot load libsparsejit from {where}: {error}. Set SPARSEJIT_LIBRARY to "
                          "the library's path, or add its folder (<prefix>/lib after `cmake --install`) to "
                          "LD_LIBRARY_PATH") from error
    for name, (restype, argtypes) in _FUNCTIONS.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    version = library.sparsejit_api_version()
    if version != API_VERSION:
        raise ImportError(f"sparsejit: {library._name} has C API version {version}; this package declares "
                          f"version {API_VERSION}")
    return library


lib = _load()


def check(status):
    """Raises SparsejitError for a failed call's status."""
    if status != OK:
        name = lib.sparsejit_status_name(status).decode()
        raise SparsejitError(name, lib.sparsejit_last_error_message().decode(errors="replace"))
