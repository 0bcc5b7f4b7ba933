"""Which lengths an exchange uses when it is given none (ulysses._lengths), the
lengths hooks, and lengths in the caller's forms (_planning.host_lengths):
torch-free, so CI runs them without torch or a GPU."""

import unittest

from ulysses import Op, _lengths, _planning


class FakeDeviceTensor:
    """A tensor on a GPU as host_lengths sees one: reading it on the host would
    synchronise, so only the reader may."""

    is_cuda = True

    def __init__(self, *values):
        self.values = list(values)

    def numel(self):
        return len(self.values)

    def __index__(self):
        raise AssertionError("a device value was read on the host without the reader")

    def __iter__(self):
        raise AssertionError("a device tensor was iterated on the host")


class CountingReader:
    def __init__(self):
        self.calls = []

    def __call__(self, tensors):
        self.calls.append(list(tensors))
        return [value for tensor in tensors for value in tensor.values]


def state(lengths=None, local_length=None, equal=False, last=None):
    made = _lengths.GroupLengths()
    made.lengths, made.local_length, made.equal, made.last = lengths, local_length, equal, last
    return made


class DecideTest(unittest.TestCase):
    def test_no_lengths_seq_to_head_and_all_gather_learn(self):
        for op in (Op.SEQ_TO_HEAD, Op.ALL_GATHER):
            self.assertEqual(_lengths.decide(op, 4, 7, None, None, None),
                             (_lengths.LEARN, None, None))
            self.assertEqual(_lengths.decide(op, 4, 7, None, None, state(last=(1, 2, 3, 4))),
                             (_lengths.LEARN, None, None))

    def test_head_to_seq_uses_the_last_seq_to_head_lengths(self):
        vila = (4, 4, 4, 7)
        self.assertEqual(_lengths.decide(Op.HEAD_TO_SEQ, 4, 19, None, None, state(last=vila)),
                         (_lengths.EXACT, vila, None))

    def test_head_to_seq_without_a_seq_to_head_is_a_clear_error(self):
        for group_state in (None, state()):
            with self.assertRaisesRegex(ValueError, "no seq -> head on this group"):
                _lengths.decide(Op.HEAD_TO_SEQ, 4, 16, None, None, group_state)

    def test_head_to_seq_refuses_last_lengths_that_do_not_fit(self):
        with self.assertRaisesRegex(ValueError, r"sum to 19, but the head-side input has 16"):
            _lengths.decide(Op.HEAD_TO_SEQ, 4, 16, None, None, state(last=(4, 4, 4, 7)))

    def test_equal_lengths_only_when_opted_in(self):
        self.assertEqual(_lengths.decide(Op.SEQ_TO_HEAD, 3, 5, None, None, state(equal=True)),
                         (_lengths.EXACT, (5, 5, 5), None))
        self.assertEqual(_lengths.decide(Op.HEAD_TO_SEQ, 3, 15, None, None, state(equal=True)),
                         (_lengths.EXACT, (5, 5, 5), None))
        with self.assertRaises(ValueError):
            _lengths.decide(Op.HEAD_TO_SEQ, 3, 16, None, None, state(equal=True))

    def test_first_found_wins(self):
        device_length = object()
        full = state(lengths=(1, 2), local_length=device_length, equal=True, last=(3, 0))
        self.assertEqual(_lengths.decide(Op.SEQ_TO_HEAD, 2, 5, (5, 1), None, full),
                         (_lengths.EXACT, (5, 1), None))
        self.assertEqual(_lengths.decide(Op.SEQ_TO_HEAD, 2, 2, None, None, full),
                         (_lengths.EXACT, (1, 2), None))
        call_length = object()
        self.assertEqual(_lengths.decide(Op.HEAD_TO_SEQ, 2, 8, None, call_length,
                                         state(local_length=device_length, equal=True)),
                         (_lengths.CAPACITY, None, call_length))
        self.assertEqual(_lengths.decide(Op.HEAD_TO_SEQ, 2, 8, None, None,
                                         state(local_length=device_length, equal=True)),
                         (_lengths.CAPACITY, None, device_length))
        self.assertEqual(_lengths.decide(Op.HEAD_TO_SEQ, 2, 8, None, None,
                                         state(equal=True, last=(3, 0))),
                         (_lengths.EXACT, (4, 4), None))

    def test_learned_lengths_hold_this_ranks_rows(self):
        self.assertEqual(_lengths.learned([4, 4, 4, 7], 4, 3, 7, _planning.host_lengths),
                         (4, 4, 4, 7))
        with self.assertRaises(RuntimeError):
            _lengths.learned([4, 4, 4, 7], 4, 2, 7, _planning.host_lengths)
        with self.assertRaises(ValueError):
            _lengths.learned([4, -4, 4, 7], 4, 3, 7, _planning.host_lengths)


class ReferenceSignatureTest(unittest.TestCase):
    def test_yunchangs_use_sync_is_not_lengths(self):
        self.assertEqual(_lengths.split_use_sync(True), (None, True))
        self.assertEqual(_lengths.split_use_sync(False), (None, False))
        self.assertEqual(_lengths.split_use_sync([3, 5]), ([3, 5], False))
        self.assertEqual(_lengths.split_use_sync(None), (None, False))
        # An int is a length list's element, never use_sync.
        self.assertEqual(_lengths.split_use_sync(1), (1, False))

    def test_reference_index_pairs(self):
        self.assertEqual(_lengths.reference_op(2, 1, (2, 1), (1, 2)), Op.SEQ_TO_HEAD)
        self.assertEqual(_lengths.reference_op(1, 2, (2, 1), (1, 2)), Op.HEAD_TO_SEQ)
        self.assertEqual(_lengths.reference_op(3, 1, (3, 1), (1, 3)), Op.SEQ_TO_HEAD)
        self.assertEqual(_lengths.reference_op(1, 3, (3, 1), (1, 3)), Op.HEAD_TO_SEQ)
        with self.assertRaises(RuntimeError):
            _lengths.reference_op(2, 3, (2, 1), (1, 2))


class HookTest(unittest.TestCase):
    def test_seq_to_head_records_and_calls_the_hooks_in_order(self):
        hooks, seen = _lengths.LengthHooks(), []
        hooks.add(lambda group, lengths, device: seen.append(("first", group, lengths, device)))
        hooks.add(lambda group, lengths, device: seen.append(("second", group, lengths, device)))
        group_state = state()
        _lengths.record(group_state, hooks, Op.SEQ_TO_HEAD, (4, 4, 4, 7), "group", "cuda:1")
        self.assertEqual(group_state.last, (4, 4, 4, 7))
        self.assertEqual(seen, [("first", "group", (4, 4, 4, 7), "cuda:1"),
                                ("second", "group", (4, 4, 4, 7), "cuda:1")])

    def test_other_ops_record_nothing(self):
        hooks, seen = _lengths.LengthHooks(), []
        hooks.add(lambda *args: seen.append(args))
        group_state = state(last=(1, 2))
        for op in (Op.HEAD_TO_SEQ, Op.ALL_GATHER):
            _lengths.record(group_state, hooks, op, (5, 5), "group", "cuda:0")
        self.assertEqual(group_state.last, (1, 2))
        self.assertEqual(seen, [])

    def test_capacity_mode_forgets_the_last_lengths_and_calls_no_hook(self):
        hooks, seen = _lengths.LengthHooks(), []
        hooks.add(lambda *args: seen.append(args))
        group_state = state(last=(1, 2))
        _lengths.record(group_state, hooks, Op.SEQ_TO_HEAD, None, "group", "cuda:0")
        self.assertIsNone(group_state.last)
        self.assertEqual(seen, [])

    def test_a_removed_hook_is_not_called(self):
        hooks, seen = _lengths.LengthHooks(), []
        handle = hooks.add(lambda *args: seen.append("removed"))
        kept = hooks.add(lambda *args: seen.append("kept"))
        self.assertEqual(len(hooks), 2)
        handle.remove()
        handle.remove()  # twice is harmless
        hooks.call("group", (1,), "cuda:0")
        self.assertEqual(seen, ["kept"])
        kept.remove()
        self.assertEqual(len(hooks), 0)

    def test_a_hook_must_be_callable(self):
        with self.assertRaises(TypeError):
            _lengths.LengthHooks().add("not a function")


class CallersFormsTest(unittest.TestCase):
    def test_a_list_of_device_scalars_is_read_once(self):
        reader = CountingReader()
        globals_format = [FakeDeviceTensor(4), FakeDeviceTensor(4), FakeDeviceTensor(4),
                          FakeDeviceTensor(7)]
        self.assertEqual(_planning.host_lengths(globals_format, 4, reader), (4, 4, 4, 7))
        self.assertEqual(len(reader.calls), 1)
        self.assertEqual(len(reader.calls[0]), 4)

    def test_host_and_device_elements_mixed(self):
        reader = CountingReader()
        self.assertEqual(_planning.host_lengths([3, FakeDeviceTensor(0), 5], 3, reader), (3, 0, 5))
        self.assertEqual(len(reader.calls), 1)

    def test_one_device_tensor_of_every_length(self):
        reader = CountingReader()
        self.assertEqual(_planning.host_lengths(FakeDeviceTensor(6, 6, 7), 3, reader), (6, 6, 7))
        self.assertEqual(len(reader.calls), 1)
        with self.assertRaisesRegex(ValueError, "2 lengths for 3 ranks"):
            _planning.host_lengths(FakeDeviceTensor(6, 6), 3, reader)

    def test_device_lengths_are_checked_like_host_ones(self):
        reader = CountingReader()
        with self.assertRaises(ValueError):
            _planning.host_lengths([FakeDeviceTensor(3), FakeDeviceTensor(-1)], 2, reader)
        with self.assertRaisesRegex(ValueError, "lengths\\[1\\] has 2 elements"):
            _planning.host_lengths([FakeDeviceTensor(3), FakeDeviceTensor(1, 2)], 2, reader)

    def test_device_lengths_without_a_reader_are_refused(self):
        with self.assertRaises(TypeError):
            _planning.host_lengths([FakeDeviceTensor(3)], 1)
        with self.assertRaises(TypeError):
            _planning.host_lengths(FakeDeviceTensor(3), 1)

    def test_a_reader_that_returns_too_few_values_is_caught(self):
        with self.assertRaises(RuntimeError):
            _planning.host_lengths([FakeDeviceTensor(3), FakeDeviceTensor(4)], 2,
                                   lambda tensors: [3])


if __name__ == "__main__":
    unittest.main()
