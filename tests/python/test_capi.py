"""The ctypes layer of the Python package (python/sparsejit/_capi.py) against libsparsejit.so:
struct layouts as the C compiler makes them, the status table, and calls that need no GPU.
Needs neither PyTorch nor a GPU. Environment (set by CTest): SPARSEJIT_LIBRARY, and
SPARSEJIT_LAYOUT_PRINTER, the program that prints the header's layouts."""
import ctypes
import json
import math
import os
import subprocess
import unittest

from sparsejit import _capi


def status_name(status):
    return _capi.lib.sparsejit_status_name(status).decode()


def tensor(data, batch, heads, tokens, head_dim):
    """A dense [B, H, N, D] sparsejit_tensor at address `data`."""
    return _capi.Tensor(data, batch, heads, tokens, head_dim, heads * tokens * head_dim, tokens * head_dim, head_dim)


class CapiLayoutTest(unittest.TestCase):
    def test_every_struct_matches_the_header(self):
        printer = os.environ.get("SPARSEJIT_LAYOUT_PRINTER")
        self.assertTrue(printer, "SPARSEJIT_LAYOUT_PRINTER is not set (CTest sets it)")
        layouts = json.loads(subprocess.run([printer], check=True, capture_output=True, text=True).stdout)
        self.assertEqual(set(layouts), set(_capi.STRUCTS))
        for name, layout in layouts.items():
            declared = _capi.STRUCTS[name]
            with self.subTest(struct=name):
                self.assertEqual(ctypes.sizeof(declared), layout["size"])
                self.assertEqual([field for field, _ in declared._fields_], list(layout["fields"]))
                for field, (offset, size) in layout["fields"].items():
                    self.assertEqual((getattr(declared, field).offset, getattr(declared, field).size), (offset, size),
                                     f"{name}.{field}: (offset, size)")

    def test_api_version_and_status_names(self):
        self.assertEqual(_capi.lib.sparsejit_api_version(), _capi.API_VERSION)
        self.assertEqual([status_name(status) for status in (_capi.OK, 1, 12, 13)],
                         ["SPARSEJIT_OK", "SPARSEJIT_ERROR_NULL_POINTER", "SPARSEJIT_ERROR_INTERNAL", "unknown status"])


class CapiWithoutGpuTest(unittest.TestCase):
    def test_token_order_is_a_permutation_with_the_text_last(self):
        frames, height, width, extra = 3, 5, 7, 4
        tokens = frames * height * width + extra
        order = (ctypes.c_int32 * tokens)()
        _capi.check(_capi.lib.sparsejit_token_order(_capi.ORDER_HILBERT, frames, height, width, extra, order, tokens))
        self.assertEqual(sorted(order), list(range(tokens)))
        self.assertEqual(list(order[-extra:]), list(range(tokens - extra, tokens)))
        self.assertNotEqual(list(order[:-extra]), list(range(tokens - extra)))  # not raster

    def test_a_failed_call_raises_with_the_status_and_the_message(self):
        order = (ctypes.c_int32 * 10)()
        with self.assertRaises(_capi.SparsejitError) as raised:
            _capi.check(_capi.lib.sparsejit_token_order(_capi.ORDER_HILBERT, 2, 2, 2, 0, order, 4))
        self.assertEqual(raised.exception.status, "SPARSEJIT_ERROR_INVALID_ARGUMENT")
        self.assertIn("capacity", str(raised.exception))

    def test_attention_validate_names_the_null_tensor(self):
        args = _capi.AttentionArgs()
        _capi.lib.sparsejit_attention_args_init(ctypes.byref(args))
        fake = 1 << 20  # an aligned address that is never read: validation touches no memory
        args.q, args.k, args.v, args.o = (tensor(fake, 1, 2, 256, 128) for _ in range(4))
        args.q.data = None
        count = ctypes.cast(fake, _capi.c_int32_p)
        args.mask = _capi.BlockMask(_capi.MASK_BLOCK_CSR, 128, 128, count, count, None, 0, 2, 0, None)
        status = _capi.lib.sparsejit_attention_validate(ctypes.byref(args))
        self.assertEqual(status_name(status), "SPARSEJIT_ERROR_NULL_POINTER")
        self.assertIn("q.data is NULL", _capi.lib.sparsejit_last_error_message().decode())
        args.q.data = fake
        _capi.check(_capi.lib.sparsejit_attention_validate(ctypes.byref(args)))  # now valid
        args.q.head_dim = args.k.head_dim = args.v.head_dim = args.o.head_dim = 80
        status = _capi.lib.sparsejit_attention_validate(ctypes.byref(args))
        self.assertEqual(status_name(status), "SPARSEJIT_ERROR_UNSUPPORTED")

    def test_mask_layout_of_sizes_a_build(self):
        inputs = _capi.MaskInputs(_capi.BF16, tensor(1 << 20, 1, 2, 1000, 128), tensor(1 << 20, 1, 2, 1000, 128), 0.0)
        options = _capi.MaskOptions()
        _capi.lib.sparsejit_mask_options_init(ctypes.byref(options))
        self.assertEqual((options.block_q, options.block_kv, options.tile, options.density), (128, 128, 16, 0.3))
        layout = _capi.MaskLayout()
        _capi.check(_capi.lib.sparsejit_mask_layout_of(ctypes.byref(inputs), ctypes.byref(options), ctypes.byref(layout)))
        self.assertEqual((layout.q_blocks, layout.kv_blocks, layout.top_k, layout.rows), (8, 8, math.ceil(0.3 * 8), 16))
        densities = (ctypes.c_double * 2)(0.1, 0.6)
        _capi.check(_capi.lib.sparsejit_mask_layout_of_per_head(ctypes.byref(inputs), ctypes.byref(options), densities,
                                                                2, ctypes.byref(layout)))
        self.assertEqual(layout.top_k, math.ceil(0.6 * 8))
        status = _capi.lib.sparsejit_mask_layout_of_per_head(ctypes.byref(inputs), ctypes.byref(options), densities,
                                                             3, ctypes.byref(layout))
        self.assertEqual(status_name(status), "SPARSEJIT_ERROR_INVALID_ARGUMENT")


if __name__ == "__main__":
    unittest.main()
