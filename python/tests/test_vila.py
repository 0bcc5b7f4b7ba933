"""ulysses.vila without torch: finding and replacing the reference's classes,
keeping VILA's globals in the reference's format, and the errors. The VILA
modules here are made in memory; torch_check.py runs apply() on the stand-in
package in vila_standin/ where torch is present."""

import subprocess
import sys
import types
import unittest
from unittest import mock

from ulysses import _lengths, vila

STANDIN_PATH = __file__.rsplit("/", 1)[0] + "/vila_standin"


class Reference4D:
    pass


class Reference5D:
    pass


class ReferenceGather:
    pass


class Ours4D:
    pass


class ReferenceAttention:
    def forward(self, query, key, value):
        return "reference"


class Ours5D:
    pass


class OursGather:
    pass


OURS = {"SeqAllToAll4D": Ours4D, "SeqAllToAll5D": Ours5D, "SeqAllGather": OursGather}


def module(name, **attributes):
    made = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(made, key, value)
    return made


def fake_vila():
    """sys.modules entries of a VILA whose attention modules imported the classes."""
    seq_len = {}
    globals_module = module(vila.GLOBALS_MODULE,
                            set_ulysses_seq_len=lambda value: seq_len.update(value=value),
                            get_ulysses_seq_len=lambda: seq_len.get("value"))
    all_to_all = module(vila.ALL_TO_ALL_MODULE, SeqAllToAll4D=Reference4D,
                        SeqAllToAll5D=Reference5D, SeqAllGather=ReferenceGather)
    attention = module("llava.train.sequence_parallel.ulysses_attn", SeqAllToAll4D=Reference4D,
                       SeqAllGather=ReferenceGather, UlyssesAttention=ReferenceAttention)
    hybrid = module("llava.train.sequence_parallel.hybrid_attn", A2A=Reference4D,
                    SeqAllToAll5D=Reference5D, unrelated=Reference4D.__name__)
    modules = {"llava": module("llava"), "llava.train": module("llava.train"),
               "llava.train.sequence_parallel": module("llava.train.sequence_parallel"),
               vila.GLOBALS_MODULE: globals_module, vila.ALL_TO_ALL_MODULE: all_to_all,
               attention.__name__: attention, hybrid.__name__: hybrid}
    return modules


def fake_make(calls):
    def make(lengths, device):
        calls.append((tuple(lengths), device))
        return [("tensor", length, device) for length in lengths]
    return make


class ReplaceClassesTest(unittest.TestCase):
    def test_every_alias_in_the_package_and_nothing_else(self):
        modules = fake_vila()
        outside = module("other", SeqAllToAll4D=Reference4D)
        modules["other"] = outside
        modules["llavax"] = module("llavax", SeqAllToAll4D=Reference4D)
        replaced = vila.replace_classes({Reference4D: Ours4D, Reference5D: Ours5D}, modules=modules)
        names = sorted("%s.%s" % (m.__name__, attribute) for m, attribute, _ in replaced)
        self.assertEqual(names, [
            "llava.train.sequence_parallel.all_to_all.SeqAllToAll4D",
            "llava.train.sequence_parallel.all_to_all.SeqAllToAll5D",
            "llava.train.sequence_parallel.hybrid_attn.A2A",
            "llava.train.sequence_parallel.hybrid_attn.SeqAllToAll5D",
            "llava.train.sequence_parallel.ulysses_attn.SeqAllToAll4D"])
        self.assertIs(modules["llava.train.sequence_parallel.hybrid_attn"].A2A, Ours4D)
        self.assertIs(modules["llava.train.sequence_parallel.ulysses_attn"].SeqAllGather,
                      ReferenceGather)
        self.assertIs(outside.SeqAllToAll4D, Reference4D)
        self.assertIs(modules["llavax"].SeqAllToAll4D, Reference4D)


class ApplyTest(unittest.TestCase):
    def setUp(self):
        self.modules = fake_vila()
        patcher = mock.patch.dict(sys.modules, self.modules)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.addCleanup(vila.revert)

    def test_apply_replaces_the_classes_and_keeps_the_globals(self):
        calls = []
        replaced = vila.apply(OURS, make=fake_make(calls))
        self.assertIn("llava.train.sequence_parallel.ulysses_attn.SeqAllToAll4D", replaced)
        self.assertIn("llava.train.sequence_parallel.hybrid_attn.A2A", replaced)
        self.assertEqual(len(replaced), 7)
        attention = self.modules["llava.train.sequence_parallel.ulysses_attn"]
        self.assertIs(attention.SeqAllToAll4D, Ours4D)
        self.assertIs(attention.SeqAllGather, OursGather)
        self.assertIs(self.modules[vila.ALL_TO_ALL_MODULE].SeqAllToAll5D, Ours5D)
        # The hooks reach VILA's globals in the reference's format.
        globals_module = self.modules[vila.GLOBALS_MODULE]
        _lengths.hooks.call("group", (4, 4, 4, 7), "cuda:0")
        self.assertEqual(globals_module.get_ulysses_seq_len(),
                         [("tensor", 4, "cuda:0"), ("tensor", 4, "cuda:0"),
                          ("tensor", 4, "cuda:0"), ("tensor", 7, "cuda:0")])

    def test_apply_twice_patches_modules_loaded_in_between(self):
        vila.apply(OURS, make=fake_make([]))
        late = module("llava.model.late", SeqAllToAll4D=Reference4D)
        sys.modules[late.__name__] = late
        self.assertEqual(vila.apply(OURS, make=fake_make([])), ["llava.model.late.SeqAllToAll4D"])
        self.assertIs(late.SeqAllToAll4D, Ours4D)
        self.assertEqual(len(_lengths.hooks), 1 + self.other_hooks())

    def other_hooks(self):
        return sum(1 for hook in _lengths.hooks._hooks.values()
                   if not isinstance(hook, vila.GlobalsWriter))

    def test_revert_puts_the_reference_back_and_stops_the_writer(self):
        vila.apply(OURS, make=fake_make([]))
        vila.revert()
        self.assertIs(self.modules["llava.train.sequence_parallel.ulysses_attn"].SeqAllToAll4D,
                      Reference4D)
        self.assertIs(self.modules["llava.train.sequence_parallel.hybrid_attn"].A2A, Reference4D)
        self.assertIs(self.modules[vila.ALL_TO_ALL_MODULE].SeqAllGather, ReferenceGather)
        # Only the auto-attach hook is left (turned off here, as it would attach again).
        self.assertEqual(self.other_hooks(), len(_lengths.hooks))
        vila.set_auto_attach(False)
        self.addCleanup(vila.set_auto_attach, True)
        _lengths.hooks.call("group", (1, 2), "cuda:0")
        self.assertIsNone(self.modules[vila.GLOBALS_MODULE].get_ulysses_seq_len())

    def test_attention_true_replaces_the_layers_forward_and_revert_restores_it(self):
        original = ReferenceAttention.forward
        self.assertEqual(len(vila.apply(OURS, make=fake_make([]))), 7)
        self.assertIs(ReferenceAttention.forward, original)
        replaced = vila.apply(OURS, make=fake_make([]), attention=True)
        self.assertEqual(replaced, ["llava.train.sequence_parallel.ulysses_attn.UlyssesAttention."
                                    "forward"])
        self.assertIs(ReferenceAttention.forward, vila.one_exchange_forward)
        self.assertEqual(vila.apply(OURS, make=fake_make([]), attention=True), [])  # once
        vila.revert()
        self.assertIs(ReferenceAttention.forward, original)
        self.assertIs(self.modules["llava.train.sequence_parallel.ulysses_attn"].SeqAllToAll4D,
                      Reference4D)

    def test_a_vila_without_the_layer_is_refused(self):
        del self.modules["llava.train.sequence_parallel.ulysses_attn"].UlyssesAttention
        with self.assertRaisesRegex(vila.VilaNotFoundError, "has no UlyssesAttention"):
            vila.apply(OURS, make=fake_make([]), attention=True)

    def test_a_vila_without_the_classes_is_refused(self):
        del self.modules[vila.ALL_TO_ALL_MODULE].SeqAllToAll5D
        with self.assertRaisesRegex(vila.VilaNotFoundError, "has no SeqAllToAll5D"):
            vila.apply(OURS, make=fake_make([]))


class NoVilaTest(unittest.TestCase):
    def test_apply_without_vila_says_so(self):
        with mock.patch.dict(sys.modules, {"llava": None}):
            with self.assertRaisesRegex(vila.VilaNotFoundError,
                                        "llava.train.sequence_parallel.all_to_all"):
                vila.apply(OURS)
        self.assertTrue(issubclass(vila.VilaNotFoundError, ImportError))

    def test_importing_the_package_imports_neither_vila_nor_torch(self):
        code = ("import sys, ulysses, ulysses.vila; "
                "print(sorted(m for m in ('torch', 'llava') if m in sys.modules))")
        env_path = sys.path[:]
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={"PYTHONPATH": ":".join([STANDIN_PATH] + env_path)})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "[]")


class GlobalsWriterTest(unittest.TestCase):
    def test_the_tensors_are_made_again_only_when_the_lengths_change(self):
        received, calls = [], []
        globals_module = module("g", set_ulysses_seq_len=received.append)
        writer = vila.GlobalsWriter(globals_module, fake_make(calls))
        writer("group", (4, 4, 4, 7), "cuda:0")
        writer("group", (4, 4, 4, 7), "cuda:0")
        writer("group", (5, 4, 4, 7), "cuda:0")
        writer("group", (5, 4, 4, 7), "cuda:1")
        self.assertEqual(calls, [((4, 4, 4, 7), "cuda:0"), ((5, 4, 4, 7), "cuda:0"),
                                 ((5, 4, 4, 7), "cuda:1")])
        self.assertEqual(len(received), 4)
        self.assertEqual(received[0], received[1])
        self.assertIsNot(received[0], received[1])  # a new list each call, as the reference's
        self.assertEqual([value for _, value, _ in received[2]], [5, 4, 4, 7])


class AutoAttachTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(vila.detach_globals)
        self.addCleanup(vila.set_auto_attach, True)

    def test_attaches_where_vilas_globals_are_loaded(self):
        received = []
        globals_module = module(vila.GLOBALS_MODULE, set_ulysses_seq_len=received.append)
        hooks = _lengths.LengthHooks()
        with mock.patch.dict(sys.modules, {vila.GLOBALS_MODULE: globals_module}):
            writer = vila.attach_if_loaded(hooks)
            self.assertIsInstance(writer, vila.GlobalsWriter)
            self.assertIs(writer.globals_module, globals_module)
            self.assertIs(vila.attach_if_loaded(hooks), writer)  # once
            self.assertIn(writer, hooks)
            self.assertEqual(len(hooks), 1)

    def test_the_packages_hook_attaches_and_writes_the_first_lengths(self):
        self.assertIn(vila.auto_attach, _lengths.hooks)
        received = []
        globals_module = module(vila.GLOBALS_MODULE, set_ulysses_seq_len=received.append)
        with mock.patch.dict(sys.modules, {vila.GLOBALS_MODULE: globals_module}):
            with mock.patch.object(vila, "reference_format", fake_make([])):
                vila.auto_attach("group", (4, 7), "cuda:0")
                self.assertEqual(received, [[("tensor", 4, "cuda:0"), ("tensor", 7, "cuda:0")]])
                vila.auto_attach("group", (5, 7), "cuda:0")  # attached: the writer writes
                self.assertEqual(len(received), 1)

    def test_nothing_without_vila_or_when_turned_off(self):
        hooks = _lengths.LengthHooks()
        with mock.patch.dict(sys.modules):
            sys.modules.pop(vila.GLOBALS_MODULE, None)
            self.assertIsNone(vila.attach_if_loaded(hooks))
        globals_module = module(vila.GLOBALS_MODULE, set_ulysses_seq_len=print)
        vila.set_auto_attach(False)
        with mock.patch.dict(sys.modules, {vila.GLOBALS_MODULE: globals_module}):
            self.assertIsNone(vila.attach_if_loaded(hooks))
        self.assertEqual(len(hooks), 0)


if __name__ == "__main__":
    unittest.main()
