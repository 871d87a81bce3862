"""The Python package on torch CUDA tensors (python/sparsejit/__init__.py): attention against a
float64 reference computed from the block mask (both layouts, both dtypes, head dims 64 and 128,
ragged lengths, an empty row, fine bits, strided views), the mask build, the permutation, and
the errors. Skips, saying why, without PyTorch or a CUDA GPU; with SPARSEJIT_REQUIRE_GPU=1
those are failures instead (the lent GPU machine)."""
import math
import os
import unittest


def _missing():
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    return ""


WHY_SKIPPED = _missing()
if WHY_SKIPPED and os.environ.get("SPARSEJIT_REQUIRE_GPU") == "1":
    raise RuntimeError(f"SPARSEJIT_REQUIRE_GPU=1, but {WHY_SKIPPED}")
if not WHY_SKIPPED:
    import torch

    import sparsejit

BOUNDS = {"bfloat16": 1e-2, "float16": 5e-3}  # ||out - ref|| / ||ref||, DEVELOPERS.md


def to_bhnd(tensor, layout):
    return tensor if layout == "bhnd" else tensor.permute(0, 2, 1, 3)


def allowed_tokens(mask, batch, heads, tokens_q, tokens_kv):
    """[B, H, Nq, Nkv] bool: where the block mask (and its fine bits) keeps a query-key pair."""
    q_blocks, kv_blocks = -(-tokens_q // mask.block_q), -(-tokens_kv // mask.block_kv)
    count, index = mask.count.cpu(), mask.index.cpu()
    fine = mask.fine_bits.cpu() if mask.fine_bits is not None else None
    allowed = torch.zeros(batch, heads, q_blocks * mask.block_q, kv_blocks * mask.block_kv, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            for qb in range(q_blocks):
                rows = slice(qb * mask.block_q, (qb + 1) * mask.block_q)
                for i in range(int(count[b, h, qb])):
                    kb = int(index[b, h, qb, i])
                    keys = slice(kb * mask.block_kv, (kb + 1) * mask.block_kv)
                    if fine is None:
                        allowed[b, h, rows, keys] = True
                        continue
                    word = int(fine[b, h, qb, i]) & ((1 << 64) - 1)
                    per_row = mask.block_kv // mask.fine_n
                    for bit in range(mask.block_q // 16 * per_row):
                        if word >> bit & 1:
                            qs, ks = divmod(bit, per_row)
                            allowed[b, h, qb * mask.block_q + 16 * qs:qb * mask.block_q + 16 * (qs + 1),
                                    kb * mask.block_kv + mask.fine_n * ks:kb * mask.block_kv + mask.fine_n * (ks + 1)] = True
    return allowed[:, :, :tokens_q, :tokens_kv]


def reference(q, k, v, mask, layout, scale=None):
    """O (float64, [B, H, Nq, D]) and the LSE of sparse attention, from dense float64 math."""
    q, k, v = (to_bhnd(t, layout).double() for t in (q, k, v))
    batch, heads, tokens_q, head_dim = q.shape
    scale = 1 / math.sqrt(head_dim) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    scores = scores.masked_fill(~allowed_tokens(mask, batch, heads, tokens_q, k.shape[2]).to(q.device), -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.where(torch.isfinite(lse)[..., None], torch.exp(scores - lse[..., None]), torch.zeros_like(scores))
    return weights @ v, lse


def random_mask(batch, heads, tokens, block, density, generator, empty_row=True):
    """Block-CSR over blocks of `block`: each row keeps about density * KB random key blocks
    (at least one), ascending; with empty_row, row (0, 0, 0) keeps none."""
    blocks = -(-tokens // block)
    keep = max(1, round(density * blocks))
    index = torch.stack([torch.sort(torch.randperm(blocks, generator=generator)[:keep]).values
                         for _ in range(batch * heads * blocks)]).view(batch, heads, blocks, keep).int()
    count = torch.full((batch, heads, blocks), keep, dtype=torch.int32)
    if empty_row:
        count[0, 0, 0] = 0
    return sparsejit.BlockMask(block_q=block, block_kv=block, count=count.cuda(), index=index.cuda())


@unittest.skipIf(bool(WHY_SKIPPED), WHY_SKIPPED)
class TorchApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.runtime = sparsejit.Runtime()
        cls.builder = sparsejit.MaskBuilder(cls.runtime)

    @classmethod
    def tearDownClass(cls):
        cls.builder.close()
        cls.runtime.close()

    def random(self, shape, dtype, generator):
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype).cuda()

    def assert_matches(self, out, lse, expected, expected_lse, layout, dtype, what):
        out = to_bhnd(out, layout).double()
        error = (torch.linalg.vector_norm(out - expected) / torch.linalg.vector_norm(expected)).item()
        self.assertLess(error, BOUNDS[str(dtype).split(".")[-1]], f"{what}: relative L2 error {error:.2e}")
        finite = torch.isfinite(expected_lse)
        self.assertTrue(torch.equal(torch.isfinite(lse), finite), f"{what}: LSE -inf where nothing is kept")
        self.assertLess((lse.double()[finite] - expected_lse[finite]).abs().max().item(), 2e-2, f"{what}: LSE")
        self.assertEqual(out[~finite].abs().max().item() if (~finite).any() else 0.0, 0.0, f"{what}: empty rows")

    def test_attention_matches_the_reference(self):
        generator = torch.Generator().manual_seed(1)
        for dtype in (torch.bfloat16, torch.float16):
            for layout in ("bnhd", "bhnd"):
                for head_dim in (64, 128):
                    for tokens, block in ((1000, 128), (333, 64)):
                        what = f"{dtype} {layout} D={head_dim} N={tokens} blocks of {block}"
                        with self.subTest(what):
                            shape = (1, tokens, 2, head_dim) if layout == "bnhd" else (1, 2, tokens, head_dim)
                            q, k, v = (self.random(shape, dtype, generator) for _ in range(3))
                            mask = random_mask(1, 2, tokens, block, 0.4, generator)
                            out = torch.full_like(q, float("nan"))  # poisoned: unwritten elements fail
                            out, lse = self.runtime.attention(q, k, v, mask, layout=layout, out=out, return_lse=True)
                            expected, expected_lse = reference(q, k, v, mask, layout)
                            self.assert_matches(out, lse, expected, expected_lse, layout, dtype, what)

    def test_views_of_a_fused_qkv_projection_need_no_copy(self):
        generator = torch.Generator().manual_seed(2)
        qkv = self.random((2, 700, 3, 2, 128), torch.bfloat16, generator)  # [B, N, 3, H, D]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        mask = random_mask(2, 2, 700, 128, 0.5, generator)
        out, lse = self.runtime.attention(q, k, v, mask, scale=0.05, return_lse=True)
        expected, expected_lse = reference(q, k, v, mask, "bnhd", scale=0.05)
        self.assert_matches(out, lse, expected, expected_lse, "bnhd", torch.bfloat16, "fused QKV views")

    def test_the_built_mask_keeps_what_was_asked_and_runs(self):
        generator = torch.Generator().manual_seed(3)
        q, k, v = (self.random((1, 1000, 2, 128), torch.bfloat16, generator) for _ in range(3))
        mask = self.builder.build(q, k, density=0.3)
        blocks, keep = 8, math.ceil(0.3 * 8)
        self.assertEqual(mask.count.shape, (1, 2, blocks))
        self.assertTrue(bool((mask.count == keep).all()))
        index = mask.index.cpu()
        for qb in range(blocks):
            kept = index[0, 0, qb, :keep].tolist()
            self.assertEqual(kept, sorted(set(kept)))
            self.assertIn(0, kept)   # the first block
            self.assertIn(qb, kept)  # the diagonal
        out, lse = self.runtime.attention(q, k, v, mask, return_lse=True)
        expected, expected_lse = reference(q, k, v, mask, "bnhd")
        self.assert_matches(out, lse, expected, expected_lse, "bnhd", torch.bfloat16, "built mask")

        fine = self.builder.build(q, k, density=0.5, fine_n=16)
        self.assertEqual(fine.fine_bits.shape, fine.index.shape)
        out, lse = self.runtime.attention(q, k, v, fine, return_lse=True)
        expected, expected_lse = reference(q, k, v, fine, "bnhd")
        self.assert_matches(out, lse, expected, expected_lse, "bnhd", torch.bfloat16, "built mask, fine bits")

        compact = self.builder.to_bitmask(fine)
        self.assertEqual((compact.form, compact.bits.shape), ("bitmask", (1, 2, blocks, 1)))
        compact_out, compact_lse = self.runtime.attention(q, k, v, compact, return_lse=True)
        self.assertTrue(torch.equal(compact_out, out) and torch.equal(compact_lse, lse), "bitmask and block-CSR differ")
        # A bitmask of one's own, without fine bits: max_kv_blocks is the call's KB (8 here, no multiple of 64).
        own = sparsejit.BlockMask(block_q=128, block_kv=128, bits=self.builder.to_bitmask(mask).bits)
        self.assertTrue(torch.equal(self.runtime.attention(q, k, v, own), self.runtime.attention(q, k, v, mask)))

        per_head = self.builder.build(q, k, head_densities=[0.2, 0.6])
        self.assertEqual(per_head.count[0, :, 0].tolist(), [math.ceil(0.2 * 8), math.ceil(0.6 * 8)])

        # The [B, H, N, D] layout, a threshold and text blocks: the last text block is in every row.
        q_h, k_h = (t.transpose(1, 2).contiguous() for t in (q, k))
        by_threshold = self.builder.build(q_h, k_h, layout="bhnd", threshold=0.5, text_blocks=1)
        self.assertEqual(by_threshold.max_kv_blocks, blocks)  # a threshold row may keep every block
        counts, index = by_threshold.count.cpu(), by_threshold.index.cpu()
        for qb in range(blocks):
            self.assertIn(blocks - 1, index[0, 1, qb, :int(counts[0, 1, qb])].tolist())

    def test_the_mask_cache_follows_its_schedule(self):
        generator = torch.Generator().manual_seed(11)
        q, k, v = (self.random((1, 1000, 2, 128), torch.bfloat16, generator) for _ in range(3))
        schedule = sparsejit.MaskSchedule(steps=5, dense_steps=1, refresh_interval=2, densities=(0.5, 0.25))
        cache = sparsejit.MaskCache(self.builder, schedule)
        masks = {(step, layer, guidance): cache.prepare(step, layer, q, k, guidance_pass=guidance)
                 for step in range(5) for layer in (0, 1) for guidance in (0, 1)}
        self.assertTrue(all(masks[step, 0, g] is None for step in range(5) for g in (0, 1)), "layer 0 is dense")
        self.assertIsNone(masks[0, 1, 0])  # the dense warm-up step
        for guidance in (0, 1):
            self.assertIs(masks[2, 1, guidance], masks[1, 1, guidance])  # reused within a window
            self.assertIs(masks[4, 1, guidance], masks[3, 1, guidance])
            self.assertIsNot(masks[3, 1, guidance], masks[1, 1, guidance])  # refreshed for the next one
        self.assertIsNot(masks[1, 1, 0], masks[1, 1, 1])  # the guidance passes keep their own
        for step, kept in ((1, 4), (3, 2)):  # ceil(0.5 * 8), ceil(0.25 * 8) key blocks per row
            mask = masks[step, 1, 0]
            self.assertEqual(mask.form, "bitmask")
            words = mask.bits.cpu().flatten().tolist()
            self.assertEqual({bin(word & (2**64 - 1)).count("1") for word in words}, {kept})
            out, lse = self.runtime.attention(q, k, v, mask, return_lse=True)
            csr = self.builder.build(q, k, density=0.5 if step == 1 else 0.25)
            expected, expected_lse = reference(q, k, v, csr, "bnhd")
            self.assert_matches(out, lse, expected, expected_lse, "bnhd", torch.bfloat16, f"cached mask, step {step}")
        with self.assertRaisesRegex(ValueError, "takes no density"):
            sparsejit.MaskCache(self.builder, schedule, density=0.3)
        with self.assertRaises(TypeError):  # the guidance pass is named on every call
            cache.prepare(2, 1, q, k)
        longer = self.random((1, 1200, 2, 128), torch.bfloat16, generator)
        with self.assertRaisesRegex(ValueError, r"keeps a mask of Q \(1, 1000, 2, 128\).*clear\(\)"):
            cache.prepare(2, 1, longer, longer, guidance_pass=0)
        cache.clear()
        self.assertEqual(cache.prepare(2, 1, longer, longer, guidance_pass=0).bits.shape, (1, 2, 10, 1))
        # A layer first seen in the middle of a window builds the window's mask; compact=False keeps block-CSR.
        lists = sparsejit.MaskCache(self.builder, schedule, compact=False)
        first = lists.prepare(4, 1, q, k, guidance_pass=0)
        self.assertEqual((first.form, first.count.unique().tolist()), ("csr", [2]))
        self.assertIs(lists.prepare(4, 1, q, k, guidance_pass=0), first)

    def test_the_custom_op_compiles_into_one_graph(self):
        generator = torch.Generator().manual_seed(12)
        q, k, v = (self.random((1, 1000, 2, 128), torch.bfloat16, generator) for _ in range(3))
        mask = self.builder.build(q, k, density=0.5)
        self.assertTrue(torch.equal(sparsejit.attention(q, k, v, mask), self.runtime.attention(q, k, v, mask)))
        compact = self.builder.to_bitmask(mask)  # the bits and the -1 (None) max_kv_blocks through the op
        own = sparsejit.BlockMask(block_q=128, block_kv=128, bits=compact.bits)
        self.assertTrue(torch.equal(sparsejit.attention(q, k, v, own), self.runtime.attention(q, k, v, mask)))
        torch.library.opcheck(torch.ops.sparsejit.attention.default,
                              (q, k, v, mask.count, mask.index, None, None, 128, 128, mask.max_kv_blocks, 0, "bnhd", 0.0),
                              test_utils=("test_schema", "test_faketensor"))

        def layer(q, k, v):  # a model's few lines around attention
            return sparsejit.attention(q * 2, k, v, mask, scale=0.05) + 1

        compiled = torch.compile(layer, fullgraph=True)  # fullgraph: a graph break would raise
        torch.testing.assert_close(compiled(q, k, v), layer(q, k, v))

    def test_cross_attention_with_fewer_keys_than_queries(self):
        generator = torch.Generator().manual_seed(9)
        q = self.random((1, 900, 2, 64), torch.float16, generator)
        k, v = (self.random((1, 300, 2, 64), torch.float16, generator) for _ in range(2))
        count = torch.full((1, 2, 8), 2, dtype=torch.int32)
        index = torch.tensor([0, 2], dtype=torch.int32).expand(1, 2, 8, 2).contiguous()
        mask = sparsejit.BlockMask(block_q=128, block_kv=128, count=count.cuda(), index=index.cuda())
        out, lse = self.runtime.attention(q, k, v, mask, return_lse=True)
        expected, expected_lse = reference(q, k, v, mask, "bnhd")
        self.assert_matches(out, lse, expected, expected_lse, "bnhd", torch.float16, "cross-attention")

    def test_permute_gathers_into_an_order_and_scatters_back(self):
        generator = torch.Generator().manual_seed(4)
        order = sparsejit.token_order("hilbert", 3, 10, 12, extra_tokens=4)
        tokens = 3 * 10 * 12 + 4
        self.assertEqual(sorted(order.tolist()), list(range(tokens)))
        tensors = [self.random((1, tokens, 2, 64), torch.float16, generator) for _ in range(3)]
        on_gpu = order.cuda()
        gathered = self.runtime.permute(tensors, on_gpu)  # [B, N, H, D] -> [B, H, N, D], reordered
        for source, destination in zip(tensors, gathered):
            self.assertTrue(torch.equal(destination, source[:, order.long()].permute(0, 2, 1, 3)))
        back = self.runtime.permute(gathered, on_gpu, direction="scatter", source_layout="bhnd",
                                    destination_layout="bnhd")
        for source, restored in zip(tensors, back):
            self.assertTrue(torch.equal(restored, source))

    def test_a_layer_captured_in_a_cuda_graph_replays_on_new_inputs(self):
        generator = torch.Generator().manual_seed(6)
        q, k, v = (self.random((1, 1000, 2, 128), torch.bfloat16, generator) for _ in range(3))
        self.runtime.attention(q, k, v, self.builder.build(q, k, density=0.5))  # loads the kernels, sizes the workspace
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # torch's capture stream is the current one in here
            mask = self.builder.build(q, k, density=0.5)
            out = self.runtime.attention(q, k, v, mask)
        for seed in (7, 8):
            generator.manual_seed(seed)
            for tensor in (q, k, v):
                tensor.copy_(self.random(tensor.shape, tensor.dtype, generator))
            out.fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize()
            expected, expected_lse = reference(q, k, v, mask, "bnhd")
            error = (torch.linalg.vector_norm(out.double().permute(0, 2, 1, 3) - expected) /
                     torch.linalg.vector_norm(expected)).item()
            self.assertLess(error, BOUNDS["bfloat16"], f"replay {seed}: relative L2 error {error:.2e}")

    @unittest.skipIf(WHY_SKIPPED or torch.cuda.device_count() < 2, "needs two GPUs")
    def test_a_runtime_on_another_gpu_leaves_torchs_current_device_alone(self):
        generator = torch.Generator().manual_seed(10)
        torch.cuda.set_device(0)
        with sparsejit.Runtime(device=1) as second, sparsejit.MaskBuilder(second) as builder:
            q, k, v = (self.random((1, 700, 2, 128), torch.bfloat16, generator).to("cuda:1") for _ in range(3))
            mask = builder.build(q, k, density=0.5)
            out, lse = second.attention(q, k, v, mask, return_lse=True)
            self.assertEqual(torch.cuda.current_device(), 0)
            self.assertEqual(out.device, torch.device("cuda:1"))
            expected, expected_lse = reference(q, k, v, mask, "bnhd")
            self.assert_matches(out, lse, expected, expected_lse, "bnhd", torch.bfloat16, "second GPU")
            with self.assertRaisesRegex(ValueError, "k is on cuda:0; this runtime is on cuda:1"):
                second.attention(q, k.to("cuda:0"), v, mask)
        self.assertEqual(torch.cuda.current_device(), 0, "closing the runtime on cuda:1 changed torch's device")

    def test_bad_input_raises_saying_what(self):
        generator = torch.Generator().manual_seed(5)
        mask = random_mask(1, 2, 256, 128, 1.0, generator, empty_row=False)
        q = self.random((1, 256, 2, 80), torch.bfloat16, generator)
        with self.assertRaises(sparsejit.SparsejitError) as raised:
            self.runtime.attention(q, q, q, mask)
        self.assertEqual(raised.exception.status, "SPARSEJIT_ERROR_UNSUPPORTED")
        with self.assertRaises(TypeError):
            self.runtime.attention(q.float(), q.float(), q.float(), mask)
        q = self.random((1, 256, 2, 64), torch.bfloat16, generator)
        bad = sparsejit.BlockMask(block_q=128, block_kv=128, count=mask.count, index=mask.index.clone().fill_(7))
        with self.assertRaises(sparsejit.SparsejitError) as raised:
            self.runtime.attention(q, q, q, bad, checked=True)
        self.assertEqual(raised.exception.status, "SPARSEJIT_ERROR_BAD_MASK")
        longer = self.random((1, 512, 2, 64), torch.bfloat16, generator)  # the mask has rows for 256 tokens
        with self.assertRaisesRegex(ValueError, "count holds 4 entries.*needs 8"):
            self.runtime.attention(longer, longer, longer, mask)
        with self.assertRaisesRegex(ValueError, "order must be .* of the 256 tokens"):
            self.runtime.permute([q], torch.arange(255, dtype=torch.int32, device="cuda"))
        with self.assertRaisesRegex(TypeError, "q is a list"):
            self.runtime.attention([1], q, q, mask)
        choice = self.runtime.lookup(q, q, q, mask)
        self.assertIn(choice["level"], ("exact", "nearest bucket", "same compute capability", "built-in default"))
        self.assertTrue(choice["problem_key"].startswith("sparse_attention|bf16|d64|"))


if __name__ == "__main__":
    unittest.main()
