"""The Python API through the real library, without a GPU: errors (code, name,
message), plans, buffer and workspace sizes, segments, and every argument
check that the library makes before touching CUDA."""

import ctypes
import itertools
import unittest

import ulysses
from ulysses import DataType, Layout, Op, Order, Result, SegmentPlace

# Addresses that are never dereferenced: every call below fails its checks
# (or, for plans, is pure host arithmetic) before any device access.
FAKE_DEVICE = 0x7F0000000000


def layout(batch=2, heads=8, head_dim=16, element_size=2, **fields):
    return Layout(batch, heads, head_dim, element_size, **fields)


class FailureAssertions(unittest.TestCase):
    def assertFails(self, code, words, function, *args):
        with self.assertRaises(ulysses.UlyssesError) as raised:
            function(*args)
        error = raised.exception
        self.assertEqual(error.code, code)
        self.assertIsInstance(error.code, Result)
        self.assertEqual(error.name, ulysses.get_error_string(code))
        for word in words:
            self.assertIn(word, error.message)
        self.assertEqual(str(error), "%s: %s" % (error.name, error.message))
        return error


class ErrorTest(FailureAssertions):

    def test_n_ranks_zero(self):
        error = self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["nRanks"],
                                 ulysses.Plan.exact, 0, 0, [], [layout()])
        self.assertEqual(error.name, "ulyssesErrorInvalidArgument")
        self.assertEqual(error.message, ulysses.get_last_error())

    def test_plan_arguments(self):
        ok = layout()
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["rank"], ulysses.Plan.exact, 2, 2, [1, 1], ok)
        self.assertFails(Result.ERROR_INVALID_LENGTH, ["lengths[1]"], ulysses.Plan.exact, 2, 0, [1, -1], ok)
        self.assertFails(Result.ERROR_INVALID_LENGTH, ["lengths[0]"], ulysses.Plan.exact, 1, 0,
                         [ulysses.MAX_LENGTH + 1], ok)
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["nTensors"], ulysses.Plan.exact, 1, 0, [1], [])
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["nTensors"], ulysses.Plan.exact, 1, 0, [1],
                         [ok] * (ulysses.MAX_TENSORS + 1))
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["layouts[1].batch"], ulysses.Plan.exact, 1, 0,
                         [1], [ok, layout(batch=0)])
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["layouts[0].heads"], ulysses.Plan.exact, 1, 0,
                         [1], layout(heads=0))
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["layouts[0].headDim"], ulysses.Plan.exact, 1,
                         0, [1], layout(head_dim=0))
        self.assertFails(Result.ERROR_UNSUPPORTED_ELEMENT_SIZE, ["elementSize"], ulysses.Plan.exact, 1,
                         0, [1], layout(element_size=3))
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["packed"], ulysses.Plan.exact, 1, 0, [1],
                         layout(packed=2))
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["order"], ulysses.Plan.exact, 1, 0, [1],
                         layout(order=5))
        self.assertFails(Result.ERROR_SIZE_OVERFLOW, ["overflows"], ulysses.Plan.exact, 1, 0, [1],
                         layout(heads=2**30, head_dim=2**40))
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["heads is 2147483648", "2^31 - 1"],
                         ulysses.Plan.exact, 1, 0, [1], layout(heads=2**31))

    def test_the_fields_after_order_reach_the_library(self):
        # queryHeads and dataType follow the enum and the padding: a misplaced
        # field would show up as a different error or none.
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["layouts[0].queryHeads is -1"],
                         ulysses.Plan.exact, 1, 0, [1], layout(query_heads=-1))
        self.assertFails(Result.ERROR_HEAD_GROUP_MISMATCH, ["queryHeads is 12", "8 kv heads"],
                         ulysses.Plan.exact, 1, 0, [1], layout(query_heads=12))
        self.assertFails(Result.ERROR_UNSUPPORTED_ELEMENT_SIZE, ["dataType has 2-byte elements",
                                                                 "elementSize is 4"],
                         ulysses.Plan.exact, 1, 0, [1],
                         layout(element_size=4, dtype=DataType.BFLOAT16))
        self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["dataType is 9"], ulysses.Plan.exact, 1, 0,
                         [1], layout(dtype=9))

    def test_capacity_plan_arguments(self):
        self.assertFails(Result.ERROR_NULL_POINTER, ["deviceLocalLength"], ulysses.Plan.capacity, 2, 0,
                         [4, 4], None, layout())
        self.assertFails(Result.ERROR_MISALIGNED_POINTER, ["deviceLocalLength", "8-byte"],
                         ulysses.Plan.capacity, 2, 0, [4, 4], FAKE_DEVICE + 4, layout())
        self.assertFails(Result.ERROR_INVALID_LENGTH, ["capacities[0]"], ulysses.Plan.capacity, 2, 0,
                         [-4, 4], FAKE_DEVICE, layout())

    def test_python_side_checks(self):
        with self.assertRaises(ValueError):
            ulysses.Plan.exact(3, 0, [1, 2], layout())      # the library would read 3
        with self.assertRaises(OverflowError):
            ulysses.Plan.exact(2**40, 0, [1], layout())     # ctypes would truncate
        with self.assertRaises(TypeError):
            ulysses.Plan.exact(1, 0, [1], [object()])
        with self.assertRaises(ValueError):
            ulysses.exchange_multi(None, Op.SEQ_TO_HEAD, [1, 2], [3], None, 0, None, None)
        with self.assertRaises(TypeError):
            ulysses.comm_create(None, config="checkPlans")

    def test_unknown_result_code(self):
        error = ulysses.UlyssesError(99, "unknown ulyssesResult_t", "")
        self.assertEqual(error.code, 99)
        self.assertEqual(str(error), "unknown ulyssesResult_t")
        self.assertEqual(ulysses.get_error_string(99), "unknown ulyssesResult_t")

    def test_a_successful_call_clears_the_message(self):
        with self.assertRaises(ulysses.UlyssesError):
            ulysses.Plan.exact(0, 0, [], layout())
        self.assertNotEqual(ulysses.get_last_error(), "")
        ulysses.get_version()
        self.assertEqual(ulysses.get_last_error(), "")


class CommWithoutGpuTest(FailureAssertions):
    """Every communicator call checks its handle before any CUDA or NCCL call."""

    def test_null_communicators(self):
        self.assertFails(Result.ERROR_NULL_POINTER, ["ncclComm"], ulysses.comm_create, None)
        self.assertFails(Result.ERROR_NULL_POINTER, ["ncclComm"], ulysses.comm_create, 0,
                         ulysses.Config(check_plans=True))
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.comm_count, None)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.comm_user_rank, None)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.comm_get_async_error, None)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.comm_clear_async_error, None)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.comm_abort, None)
        ulysses.comm_destroy(None)  # NULL is allowed, as free(NULL)

    def test_a_comm_never_created_is_refused(self):
        self.assertFails(Result.ERROR_INVALID_USAGE, ["not a live ulyssesComm_t"],
                         ulysses.comm_count, FAKE_DEVICE)

    def test_exchanges_need_a_comm(self):
        with ulysses.Plan.exact(2, 0, [3, 5], layout()) as plan:
            for call in (ulysses.seq_to_head, ulysses.head_to_seq, ulysses.all_gather):
                self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], call, plan, FAKE_DEVICE,
                                 FAKE_DEVICE + 2**20, None, 0, None, 0)
            self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.exchange_multi, plan,
                             Op.SEQ_TO_HEAD, [FAKE_DEVICE], [FAKE_DEVICE + 2**20], None, 0, None, 0)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.all_gather_lengths,
                         FAKE_DEVICE, FAKE_DEVICE + 64, None, 0)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.gather_lengths_host, 3, None, 0)

    def test_one_pass_calls_need_a_comm(self):
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.mem_alloc, None, 4096)
        self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.mem_free, None, FAKE_DEVICE)
        with ulysses.Plan.exact(2, 0, [3, 5], layout()) as plan:
            self.assertFails(Result.ERROR_NULL_POINTER, ["comm"], ulysses.get_exchange_path, plan,
                             Op.SEQ_TO_HEAD, [FAKE_DEVICE], None)
        self.assertFails(Result.ERROR_INVALID_USAGE, ["not a live ulyssesComm_t"],
                         ulysses.mem_alloc, FAKE_DEVICE, 4096)

    def test_config_defaults_are_the_initializers(self):
        config = ulysses.Config()
        self.assertEqual((config.size, config.magic, config.version, config.check_plans),
                         (ctypes.sizeof(ulysses.Config), ulysses.CONFIG_MAGIC, ulysses.VERSION_CODE,
                          ulysses.CONFIG_UNDEF_INT))
        self.assertEqual(ulysses.Config(check_plans=True).check_plans, 1)
        self.assertEqual(ulysses.Config(check_plans=False).checkPlans, 0)
        self.assertEqual(ulysses.Config(one_pass=True).onePass, 1)


class StageTest(FailureAssertions):
    """ulyssesPack / ulyssesUnpack refuse bad arguments before launching anything."""

    def test_exact_mode_takes_no_device_lengths(self):
        with ulysses.Plan.exact(2, 0, [3, 5], layout()) as plan:
            self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["exact-mode"], ulysses.pack, plan,
                             Op.SEQ_TO_HEAD, [FAKE_DEVICE], FAKE_DEVICE + 2**20, FAKE_DEVICE + 2**21,
                             FAKE_DEVICE + 2**22, 2**20, 0)

    def test_capacity_mode_needs_device_lengths(self):
        with ulysses.Plan.capacity(2, 0, [4, 4], FAKE_DEVICE, layout()) as plan:
            self.assertFails(Result.ERROR_NULL_POINTER, ["deviceLengths"], ulysses.unpack, plan,
                             Op.SEQ_TO_HEAD, [FAKE_DEVICE], None, FAKE_DEVICE + 64,
                             FAKE_DEVICE + 2**22, 2**20, 0)

    def test_buffer_checks(self):
        with ulysses.Plan.exact(2, 0, [3, 5], [layout(), layout(heads=4)]) as plan:
            needed = plan.workspace_size(Op.SEQ_TO_HEAD)
            workspace = FAKE_DEVICE + 2**24
            self.assertFails(Result.ERROR_LAYOUT_MISMATCH, ["1 tensor", "made for 2"], ulysses.pack,
                             plan, Op.SEQ_TO_HEAD, [FAKE_DEVICE], None, None, workspace, needed, 0)
            sendbuffs = [FAKE_DEVICE, FAKE_DEVICE + 2**20]
            self.assertFails(Result.ERROR_WORKSPACE_TOO_SMALL, ["workspaceSize is %d" % (needed - 1)],
                             ulysses.pack, plan, Op.SEQ_TO_HEAD, sendbuffs, None, None, workspace,
                             needed - 1, 0)
            self.assertFails(Result.ERROR_MISALIGNED_POINTER, ["16-byte"], ulysses.pack, plan,
                             Op.SEQ_TO_HEAD, sendbuffs, None, None, workspace + 8, needed, 0)
            self.assertFails(Result.ERROR_NULL_POINTER, ["sendbuff of tensor 1"], ulysses.pack, plan,
                             Op.SEQ_TO_HEAD, [FAKE_DEVICE, None], None, None, workspace, needed, 0)
            self.assertFails(Result.ERROR_BUFFER_OVERLAP, ["workspace"], ulysses.unpack, plan,
                             Op.SEQ_TO_HEAD, [workspace, FAKE_DEVICE], None, None, workspace,
                             needed, 0)
            self.assertFails(Result.ERROR_INVALID_ARGUMENT, ["op is 7"], ulysses.pack, plan, 7,
                             sendbuffs, None, None, workspace, needed, 0)

    def test_shared_kv_heads_need_a_float_type_to_be_summed(self):
        kv = layout(batch=1, heads=2, query_heads=8)  # 2 kv heads over 4 ranks: shared
        with ulysses.Plan.exact(4, 0, [2, 2, 2, 2], kv) as plan:
            self.assertFails(Result.ERROR_UNSUPPORTED_ELEMENT_SIZE, ["dataType"], ulysses.unpack,
                             plan, Op.HEAD_TO_SEQ, [FAKE_DEVICE], None, None, FAKE_DEVICE + 2**24,
                             plan.workspace_size(Op.HEAD_TO_SEQ), 0)


def seq_bytes(lay, length):
    return lay.batch * length * lay.packed * lay.heads * lay.head_dim * lay.element_size


def split(heads, n_ranks, rank):
    """The head split, written out from the header's words: contiguous groups,
    the lower ranks taking one extra head."""
    sizes = [heads // n_ranks + (1 if r < heads % n_ranks else 0) for r in range(n_ranks)]
    return sum(sizes[:rank]), sizes[rank]


def kv_heads_of(kv_heads, query_heads, n_ranks, rank):
    begin, count = split(query_heads, n_ranks, rank)
    if count == 0:
        return 0
    group = query_heads // kv_heads
    first, end = begin // group, -(-(begin + count) // group)
    return end - first


class PlanSizeTest(unittest.TestCase):
    def test_buffer_sizes_follow_the_semantics(self):
        cases = itertools.product([1, 2, 3, 4, 5], [1, 3, 8], [1, 2], [1, 3],
                                  [Order.BSHD, Order.SBHD])
        for n_ranks, heads, batch, packed, order in cases:
            lengths = [(7 * r + 3) % 5 for r in range(n_ranks)]
            lay = Layout(batch, heads, 4, 2, packed, order)
            for rank in range(n_ranks):
                with ulysses.Plan.exact(n_ranks, rank, lengths, lay) as plan:
                    local, total = seq_bytes(lay, lengths[rank]), seq_bytes(lay, sum(lengths))
                    mine = split(heads, n_ranks, rank)[1]
                    head_side = total // heads * mine
                    where = (n_ranks, heads, batch, packed, order, rank)
                    self.assertEqual(plan.buffer_sizes(Op.SEQ_TO_HEAD), (local, head_side), where)
                    self.assertEqual(plan.buffer_sizes(Op.HEAD_TO_SEQ), (head_side, local), where)
                    self.assertEqual(plan.buffer_sizes(Op.ALL_GATHER), (local, total), where)
                    self.assertEqual(ulysses.head_range(heads, n_ranks, rank),
                                     split(heads, n_ranks, rank))

    def test_grouped_query_buffer_sizes(self):
        for n_ranks, query_heads, kv_heads in [(8, 28, 4), (4, 8, 2), (4, 8, 4), (3, 6, 2),
                                               (6, 4, 1), (5, 32, 8), (2, 16, 16)]:
            lengths = [r + 1 for r in range(n_ranks)]
            kv = Layout(1, kv_heads, 128, 2, query_heads=query_heads, dtype=DataType.BFLOAT16)
            for rank in range(n_ranks):
                with ulysses.Plan.exact(n_ranks, rank, lengths, kv) as plan:
                    count = kv_heads_of(kv_heads, query_heads, n_ranks, rank)
                    expected = sum(lengths) * count * 128 * 2
                    self.assertEqual(plan.buffer_sizes(Op.SEQ_TO_HEAD)[1], expected,
                                     (n_ranks, query_heads, kv_heads, rank))
                    self.assertEqual(ulysses.head_range(kv_heads, n_ranks, rank, query_heads)[1],
                                     count)

    def test_capacity_plans_size_buffers_by_capacity(self):
        capacities = [4, 6, 0]
        lay = layout(batch=2, heads=6)
        with ulysses.Plan.capacity(3, 1, capacities, FAKE_DEVICE, lay) as plan:
            self.assertTrue(plan.capacity_mode)
            self.assertEqual(plan.buffer_sizes(Op.SEQ_TO_HEAD),
                             (seq_bytes(lay, 6), seq_bytes(lay, 10) // 6 * 2))
            self.assertGreater(plan.workspace_size(Op.SEQ_TO_HEAD), 0)  # the length table

    def test_workspace_is_zero_where_every_pass_is_skipped(self):
        with ulysses.Plan.exact(1, 0, [5], layout()) as plan:
            for op in Op:
                self.assertEqual(plan.workspace_size(op), 0, op)
        with ulysses.Plan.exact(2, 0, [3, 5], layout(batch=2)) as plan:
            self.assertGreater(plan.workspace_size(Op.SEQ_TO_HEAD), 0)

    def test_size_queries_check_their_arguments(self):
        with ulysses.Plan.exact(2, 0, [3, 5], layout()) as plan:
            with self.assertRaises(ulysses.UlyssesError) as raised:
                plan.buffer_sizes(Op.SEQ_TO_HEAD, tensor=1)
            self.assertEqual(raised.exception.code, Result.ERROR_INVALID_ARGUMENT)
            self.assertIn("tensor is 1", raised.exception.message)
            with self.assertRaises(ulysses.UlyssesError) as raised:
                plan.workspace_size(9)
            self.assertIn("op is 9", raised.exception.message)


class SegmentTest(unittest.TestCase):
    def plans(self, n_ranks, lengths, layouts):
        return [ulysses.Plan.exact(n_ranks, rank, lengths, layouts) for rank in range(n_ranks)]

    def test_every_send_matches_its_receive(self):
        for n_ranks, batch, order in itertools.product([1, 2, 3, 4], [1, 2], [Order.BSHD, Order.SBHD]):
            lengths = [(3 * r + 2) % 4 for r in range(n_ranks)]
            layouts = [Layout(batch, 5, 8, 4, order=order),
                       Layout(batch, 2, 8, 4, order=order, query_heads=4, dtype=DataType.FLOAT32)]
            plans = self.plans(n_ranks, lengths, layouts)
            for op, tensor in itertools.product(Op, range(len(layouts))):
                for rank, peer in itertools.product(range(n_ranks), repeat=2):
                    sent = plans[rank].segments(op, tensor, True)[peer]
                    received = plans[peer].segments(op, tensor, False)[rank]
                    self.assertEqual(sent.bytes, received.bytes, (op, tensor, rank, peer))

    def test_segments_lie_inside_their_buffers(self):
        lengths = [3, 0, 5]
        layouts = [Layout(2, 6, 8, 2), Layout(2, 3, 8, 2, packed=3)]
        for rank, plan in enumerate(self.plans(3, lengths, layouts)):
            for op, tensor in itertools.product(Op, range(2)):
                send_bytes, recv_bytes = plan.buffer_sizes(op, tensor)
                workspace = plan.workspace_size(op)
                for is_send, user_bytes in ((True, send_bytes), (False, recv_bytes)):
                    segments = plan.segments(op, tensor, is_send)
                    self.assertEqual(len(segments), 3)
                    self.assertEqual(sum(s.bytes for s in segments),
                                     user_bytes if op != Op.ALL_GATHER or not is_send
                                     else 3 * user_bytes)
                    for segment in (s for s in segments if s.bytes > 0):  # empty ones move nothing
                        limit = workspace if segment.place == SegmentPlace.IN_WORKSPACE else user_bytes
                        self.assertLessEqual(segment.offset + segment.bytes, limit,
                                             (rank, op, tensor, is_send, segment))

    def test_direct_segments_skip_the_workspace(self):
        # Batch 1: every peer's rows are one block of the head-side buffer.
        plan = ulysses.Plan.exact(2, 0, [3, 5], Layout(1, 4, 8, 2))
        self.assertTrue(all(s.place == SegmentPlace.IN_USER_BUFFER
                            for s in plan.segments(Op.SEQ_TO_HEAD, 0, False)))
        self.assertEqual([s.offset for s in plan.segments(Op.SEQ_TO_HEAD, 0, False)],
                         [0, 3 * 2 * 8 * 2])


class PlanObjectTest(unittest.TestCase):
    def test_close_and_context(self):
        plan = ulysses.Plan.exact(2, 1, [3, 5], layout())
        self.assertIn("exact", repr(plan))
        self.assertEqual((plan.n_ranks, plan.rank, plan.lengths, plan.n_tensors), (2, 1, (3, 5), 1))
        plan.close()
        plan.close()
        with self.assertRaises(ValueError):
            plan.workspace_size(Op.SEQ_TO_HEAD)
        with ulysses.Plan.exact(1, 0, [1], layout()) as other:
            self.assertIsNotNone(other.handle)
        self.assertIsNone(other.handle)

    def test_one_to_one_functions(self):
        handle = ulysses.plan_create_exact(2, 0, [3, 5], [layout()])
        try:
            sizes = ulysses.get_buffer_sizes(handle, Op.SEQ_TO_HEAD, 0)
            self.assertEqual(sizes, ulysses.Plan.exact(2, 0, [3, 5], layout()).buffer_sizes(Op.SEQ_TO_HEAD))
            self.assertEqual(ulysses.get_workspace_size(handle, Op.ALL_GATHER),
                             ulysses.Plan.exact(2, 0, [3, 5], layout()).workspace_size(Op.ALL_GATHER))
        finally:
            ulysses.plan_destroy(handle)
        ulysses.plan_destroy(None)

    def test_layout_value_semantics(self):
        a = Layout(1, 2, 3, 4, query_heads=4, dtype=DataType.FLOAT32)
        self.assertEqual(a, Layout(1, 2, 3, 4, 1, Order.BSHD, 4, DataType.FLOAT32))
        self.assertNotEqual(a, Layout(1, 2, 3, 4))
        self.assertEqual(len({a, Layout(1, 2, 3, 4, query_heads=4, dtype=DataType.FLOAT32)}), 1)
        self.assertIn("query_heads=4", repr(a))
        self.assertIn("dtype=1", repr(a))

    def test_snake_case_names_reach_the_c_fields(self):
        a = Layout(batch=2, heads=8, head_dim=16, element_size=2, query_heads=16,
                   dtype=DataType.BFLOAT16)
        self.assertEqual((a.headDim, a.elementSize, a.queryHeads, a.dataType),
                         (16, 2, 16, DataType.BFLOAT16))
        self.assertEqual((a.head_dim, a.element_size, a.query_heads, a.dtype),
                         (16, 2, 16, DataType.BFLOAT16))
        self.assertIs(type(a.dtype), DataType)
        a.head_dim = 32
        self.assertEqual(a.headDim, 32)

    def test_the_c_keywords_are_refused_naming_the_new_ones(self):
        for c_name, name in (("headDim", "head_dim"), ("elementSize", "element_size"),
                             ("queryHeads", "query_heads"), ("dataType", "dtype")):
            with self.assertRaisesRegex(TypeError, r"Layout\(\) takes %s=, not the C name %s="
                                        % (name, c_name)):
                Layout(1, 2, **{c_name: 4})
        for c_name, name in (("checkPlans", "check_plans"), ("onePass", "one_pass")):
            with self.assertRaisesRegex(TypeError, r"Config\(\) takes %s=" % name):
                ulysses.Config(**{c_name: True})

    def test_reverse(self):
        self.assertEqual(ulysses.reverse(Op.SEQ_TO_HEAD), Op.HEAD_TO_SEQ)
        self.assertEqual(ulysses.reverse(Op.HEAD_TO_SEQ), Op.SEQ_TO_HEAD)
        with self.assertRaises(ValueError):
            ulysses.reverse(Op.ALL_GATHER)


if __name__ == "__main__":
    unittest.main()
