"""Which lengths an exchange uses (ulysses._lengths.resolve), the lengths
hooks, and lengths in the caller's forms (_lengths.host_lengths): torch-free,
with stand-ins for the gather and the device read, so CI runs them without
torch or a GPU."""

import unittest

import ulysses
from ulysses import Op, _lengths


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


class Gather:
    """The stand-in for the one gather of learned mode: every rank's length."""

    def __init__(self, lengths):
        self.lengths, self.calls = lengths, []

    def __call__(self, rows):
        self.calls.append(rows)
        return list(self.lengths)


def no_gather(rows):
    raise AssertionError("this call should not gather the lengths")


def resolve(op, n_ranks, rank, input_rows, **arguments):
    arguments.setdefault("gather", no_gather)
    return _lengths.resolve(op, n_ranks, rank, input_rows, **arguments)


class ResolveTest(unittest.TestCase):
    def test_no_lengths_seq_to_head_and_all_gather_learn_with_one_gather(self):
        for op, head_rows in ((Op.SEQ_TO_HEAD, 19), (Op.ALL_GATHER, 19)):
            gather = Gather([4, 4, 4, 7])
            resolved = resolve(op, 4, 3, 7, gather=gather, state=state(last=(1, 2, 3, 4)))
            self.assertEqual(resolved, _lengths.Resolved(_lengths.LEARNED, (4, 4, 4, 7), None, None,
                                                         7, head_rows))
            self.assertEqual(gather.calls, [7])

    def test_learned_lengths_hold_this_ranks_rows(self):
        with self.assertRaisesRegex(RuntimeError, "returned 4 for rank 2, which holds 7"):
            resolve(Op.SEQ_TO_HEAD, 4, 2, 7, gather=Gather([4, 4, 4, 7]))
        with self.assertRaises(ValueError):
            resolve(Op.SEQ_TO_HEAD, 4, 3, 7, gather=Gather([4, -4, 4, 7]))
        with self.assertRaisesRegex(ValueError, "3 lengths for 4 ranks"):
            resolve(Op.SEQ_TO_HEAD, 4, 2, 7, gather=Gather([4, 4, 7]))

    def test_head_to_seq_uses_the_last_seq_to_head_lengths(self):
        vila = (4, 4, 4, 7)
        self.assertEqual(resolve(Op.HEAD_TO_SEQ, 4, 0, 19, state=state(last=vila)),
                         _lengths.Resolved(_lengths.RECORDED, vila, None, None, 4, 19))

    def test_seq_to_head_records_its_lengths_and_nothing_else_does(self):
        group_state = state(last=(1, 2))
        resolve(Op.ALL_GATHER, 2, 0, 3, state=group_state, gather=Gather([3, 3]))
        resolve(Op.HEAD_TO_SEQ, 2, 0, 8, state=group_state, lengths=[5, 3])
        self.assertEqual(group_state.last, (1, 2))
        resolve(Op.SEQ_TO_HEAD, 2, 1, 3, state=group_state, lengths=[5, 3])
        self.assertEqual(group_state.last, (5, 3))
        resolve(Op.SEQ_TO_HEAD, 2, 1, 3, state=group_state, gather=Gather([6, 3]))
        self.assertEqual(group_state.last, (6, 3))

    def test_capacity_mode_forgets_the_last_lengths(self):
        group_state = state(last=(1, 2))
        device_length = object()
        self.assertEqual(resolve(Op.SEQ_TO_HEAD, 2, 0, 6, local_length=device_length,
                                 state=group_state),
                         _lengths.Resolved(_lengths.CAPACITY, None, device_length, 6, 6, 12))
        self.assertIsNone(group_state.last)

    def test_head_to_seq_without_a_seq_to_head_is_a_clear_error(self):
        for group_state in (None, state()):
            with self.assertRaisesRegex(ValueError, "no seq -> head on this group"):
                resolve(Op.HEAD_TO_SEQ, 4, 0, 16, state=group_state)

    def test_head_to_seq_refuses_last_lengths_that_do_not_fit(self):
        with self.assertRaisesRegex(ValueError, r"sum to 19, but the head-side input has 16"):
            resolve(Op.HEAD_TO_SEQ, 4, 0, 16, state=state(last=(4, 4, 4, 7)))

    def test_equal_lengths_only_when_opted_in(self):
        self.assertEqual(resolve(Op.SEQ_TO_HEAD, 3, 1, 5, state=state(equal=True)).lengths,
                         (5, 5, 5))
        self.assertEqual(resolve(Op.HEAD_TO_SEQ, 3, 1, 15, state=state(equal=True)),
                         _lengths.Resolved(_lengths.GIVEN, (5, 5, 5), None, None, 5, 15))
        with self.assertRaises(ValueError):
            resolve(Op.HEAD_TO_SEQ, 3, 0, 16, state=state(equal=True))

    def test_given_lengths_must_fit_the_input(self):
        with self.assertRaisesRegex(ValueError, "rank 1's sequence-side input has 3 rows"):
            resolve(Op.SEQ_TO_HEAD, 2, 1, 3, lengths=[3, 5])
        with self.assertRaisesRegex(ValueError, "head-side input has 7 rows"):
            resolve(Op.HEAD_TO_SEQ, 2, 1, 7, lengths=[3, 5])

    def test_use_sync_in_the_lengths_place_means_no_lengths(self):
        self.assertEqual(resolve(Op.SEQ_TO_HEAD, 2, 0, 3, lengths=True,
                                 gather=Gather([3, 5])).mode, _lengths.LEARNED)

    def test_first_found_wins(self):
        device_length = object()
        full = state(lengths=(1, 2), local_length=device_length, equal=True, last=(3, 0))
        self.assertEqual(resolve(Op.SEQ_TO_HEAD, 2, 0, 5, lengths=(5, 1), state=full).lengths,
                         (5, 1))
        self.assertEqual(resolve(Op.SEQ_TO_HEAD, 2, 1, 2, state=full).lengths, (1, 2))
        call_length = object()
        self.assertEqual(resolve(Op.HEAD_TO_SEQ, 2, 0, 8, local_length=call_length,
                                 state=state(local_length=device_length, equal=True)).local_length,
                         call_length)
        self.assertEqual(resolve(Op.HEAD_TO_SEQ, 2, 0, 8,
                                 state=state(local_length=device_length, equal=True)).local_length,
                         device_length)
        self.assertEqual(resolve(Op.HEAD_TO_SEQ, 2, 0, 8, state=state(equal=True, last=(3, 0))),
                         _lengths.Resolved(_lengths.GIVEN, (4, 4), None, None, 4, 8))

    def test_device_lengths_go_through_the_reader(self):
        reader = CountingReader()
        resolved = resolve(Op.SEQ_TO_HEAD, 2, 1, 3, lengths=[FakeDeviceTensor(5),
                                                             FakeDeviceTensor(3)],
                           read_device=reader)
        self.assertEqual((resolved.mode, resolved.lengths), (_lengths.GIVEN, (5, 3)))
        self.assertEqual(len(reader.calls), 1)


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
    def test_hooks_are_called_in_the_order_they_were_added(self):
        hooks, seen = _lengths.LengthHooks(), []
        hooks.add(lambda group, lengths, device: seen.append(("first", group, lengths, device)))
        hooks.add(lambda group, lengths, device: seen.append(("second", group, lengths, device)))
        hooks.call("group", (4, 4, 4, 7), "cuda:1")
        self.assertEqual(seen, [("first", "group", (4, 4, 4, 7), "cuda:1"),
                                ("second", "group", (4, 4, 4, 7), "cuda:1")])

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
    def test_host_lengths(self):
        self.assertEqual(_lengths.host_lengths([3, 0, 5], 3), (3, 0, 5))
        with self.assertRaises(ValueError):
            _lengths.host_lengths([3, 5], 3)
        with self.assertRaises(ValueError):
            _lengths.host_lengths([3, -1], 2)
        with self.assertRaises(ValueError):
            _lengths.host_lengths([ulysses.MAX_LENGTH + 1], 1)
        with self.assertRaises(TypeError):
            _lengths.host_lengths([3.5], 1)

    def test_a_list_of_device_scalars_is_read_once(self):
        reader = CountingReader()
        globals_format = [FakeDeviceTensor(4), FakeDeviceTensor(4), FakeDeviceTensor(4),
                          FakeDeviceTensor(7)]
        self.assertEqual(_lengths.host_lengths(globals_format, 4, reader), (4, 4, 4, 7))
        self.assertEqual(len(reader.calls), 1)
        self.assertEqual(len(reader.calls[0]), 4)

    def test_host_and_device_elements_mixed(self):
        reader = CountingReader()
        self.assertEqual(_lengths.host_lengths([3, FakeDeviceTensor(0), 5], 3, reader), (3, 0, 5))
        self.assertEqual(len(reader.calls), 1)

    def test_one_device_tensor_of_every_length(self):
        reader = CountingReader()
        self.assertEqual(_lengths.host_lengths(FakeDeviceTensor(6, 6, 7), 3, reader), (6, 6, 7))
        self.assertEqual(len(reader.calls), 1)
        with self.assertRaisesRegex(ValueError, "2 lengths for 3 ranks"):
            _lengths.host_lengths(FakeDeviceTensor(6, 6), 3, reader)

    def test_device_lengths_are_checked_like_host_ones(self):
        reader = CountingReader()
        with self.assertRaises(ValueError):
            _lengths.host_lengths([FakeDeviceTensor(3), FakeDeviceTensor(-1)], 2, reader)
        with self.assertRaisesRegex(ValueError, "lengths\\[1\\] has 2 elements"):
            _lengths.host_lengths([FakeDeviceTensor(3), FakeDeviceTensor(1, 2)], 2, reader)

    def test_device_lengths_without_a_reader_are_refused(self):
        with self.assertRaises(TypeError):
            _lengths.host_lengths([FakeDeviceTensor(3)], 1)
        with self.assertRaises(TypeError):
            _lengths.host_lengths(FakeDeviceTensor(3), 1)

    def test_a_reader_that_returns_too_few_values_is_caught(self):
        with self.assertRaises(RuntimeError):
            _lengths.host_lengths([FakeDeviceTensor(3), FakeDeviceTensor(4)], 2,
                                   lambda tensors: [3])


if __name__ == "__main__":
    unittest.main()
