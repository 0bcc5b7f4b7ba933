"""LongVILA (VILA's llava package) on ulysses, in one call:

    import ulysses.vila
    ulysses.vila.apply()      # after VILA is importable, before training starts

replaces the reference's SeqAllToAll4D, SeqAllToAll5D and SeqAllGather with
ulysses.torch's, in llava.train.sequence_parallel.all_to_all (so that modules
imported later get ours) and in every llava module already loaded that had
imported them (under any name), with attention=True also VILA's
UlyssesAttention.forward (one_exchange_forward: q, k and v in one exchange,
kv heads replicated inside it instead of expandKV), and keeps VILA's
sequence-parallel globals in
the reference's format: after each seq -> head, set_ulysses_seq_len() receives
every rank's length as a list of one-element int64 tensors on the input's
device, in rank order, so VILA's code that reads get_ulysses_seq_len() (the
gathered attention mask) works unchanged. revert() undoes both.

Switching only the import (from ulysses.torch import SeqAllToAll4D) keeps the
globals updated too: this module (imported with the package) adds a lengths
hook that, at the first seq -> head, attaches the same writer where the
process has imported VILA's globals module (set_auto_attach(False) stops
that); ulysses.torch knows nothing of VILA. Importing this module imports
neither VILA nor torch.
"""

import importlib
import sys

from . import _lengths

PACKAGE = "llava"
GLOBALS_MODULE = "llava.train.sequence_parallel.globals"
ALL_TO_ALL_MODULE = "llava.train.sequence_parallel.all_to_all"
ATTENTION_MODULE = "llava.train.sequence_parallel.ulysses_attn"
CLASS_NAMES = ("SeqAllToAll4D", "SeqAllToAll5D", "SeqAllGather")

__all__ = ["apply", "revert", "VilaNotFoundError", "GlobalsWriter", "attach_globals",
           "detach_globals", "attach_if_loaded", "auto_attach", "set_auto_attach", "replace_classes",
           "one_exchange_forward"]


class VilaNotFoundError(ImportError):
    """apply() found no VILA to patch."""


def reference_format(lengths, device):
    """Every rank's length as the reference stores it: a list of one-element
    int64 tensors on device. One host-to-device copy for all of them, from
    pinned memory and without waiting, where device is a GPU."""
    import torch
    host = torch.tensor(list(lengths), dtype=torch.int64)
    if torch.device(device).type == "cuda":
        values = host.pin_memory().to(device, non_blocking=True)
    else:
        values = host.to(device)
    return list(values.split(1))


class GlobalsWriter:
    """The lengths hook that keeps VILA's globals: globals_module.
    set_ulysses_seq_len(make(lengths, device)). The tensors are made again only
    when the lengths or the device change, so that steady training costs no
    copy per attention layer."""

    def __init__(self, globals_module, make=reference_format):
        self.globals_module = globals_module
        self.make = make
        self._key = None
        self._tensors = None

    def __call__(self, group, lengths, device):
        key = (tuple(lengths), str(device))
        if key != self._key:
            self._tensors = list(self.make(lengths, device))
            self._key = key
        # A new list each time, as the reference gives; the tensors are shared.
        self.globals_module.set_ulysses_seq_len(list(self._tensors))


_writer = None
_writer_handle = None
_auto_attach = True
_replaced = []
_originals = {}


def attach_globals(globals_module, make=None, hooks=None):
    """Keeps globals_module's set_ulysses_seq_len updated after each seq -> head
    (replacing the writer attached before, if any); make: the globals' value
    (default reference_format). Returns the writer."""
    global _writer, _writer_handle
    detach_globals()
    _writer = GlobalsWriter(globals_module, make or reference_format)
    _writer_handle = (hooks if hooks is not None else _lengths.hooks).add(_writer)
    return _writer


def detach_globals():
    """Stops updating VILA's globals."""
    global _writer, _writer_handle
    if _writer_handle is not None:
        _writer_handle.remove()
    _writer, _writer_handle = None, None


def set_auto_attach(enabled):
    """Whether a seq -> head attaches the globals writer by itself where the
    process has imported VILA's globals module (default: yes)."""
    global _auto_attach
    _auto_attach = bool(enabled)


def attach_if_loaded(hooks=None):
    """The globals writer attached where VILA's globals module is loaded and no
    writer is; a dictionary look-up otherwise. Returns the writer or None."""
    if _writer is None and _auto_attach:
        module = sys.modules.get(GLOBALS_MODULE)
        if module is not None and hasattr(module, "set_ulysses_seq_len"):
            return attach_globals(module, hooks=hooks)
    return _writer


def auto_attach(group, lengths, device):
    """The lengths hook this module adds: attaches the globals writer where
    VILA's globals module is loaded and none is attached, and hands it this
    call's lengths (the writer is a hook from then on)."""
    if _writer is None:
        writer = attach_if_loaded()
        if writer is not None:
            writer(group, lengths, device)


_lengths.hooks.add(auto_attach)


def replace_classes(replacements, package=PACKAGE, modules=None):
    """replacements: {original class: its replacement}. Every attribute of every
    loaded module of package (modules: a mapping name -> module, default
    sys.modules) that is one of the originals, by identity and under any name,
    is set to its replacement. Returns what was replaced, as (module, attribute
    name, original) triples, in module name order."""
    modules = sys.modules if modules is None else modules
    replaced = []
    prefix = package + "."
    names = sorted(name for name in list(modules) if name == package or name.startswith(prefix))
    for name in names:
        module = modules[name]
        if module is None:
            continue
        for attribute, value in list(vars(module).items()):
            for original, replacement in replacements.items():
                if value is original:
                    setattr(module, attribute, replacement)
                    replaced.append((module, attribute, original))
    return replaced


def one_exchange_forward(self, query, key, value, *args, attention_mask=None, dropout_p=0.0,
                         softmax_scale=None, seqlens_in_batch=None, causal=False,
                         window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                         return_attn_probs=False):
    """VILA's UlyssesAttention.forward, its signature and its calls of the local
    attention, on one exchange: q, k and v seq -> head in one call with one
    resolution of the lengths (one gather where they are learned), each rank
    receiving the kv heads its query heads read where VILA first copies them
    with expandKV (their gradients summed in the backward, as expandKV's
    backward does); the attention mask gathered with those lengths, as VILA
    builds it from its globals; the output head -> seq. window_size,
    alibi_slopes, deterministic and return_attn_probs are ignored, as VILA's
    forward ignores them."""
    from . import torch as binding
    q, k, v, call = binding.qkv_seq_to_head(query, key, value, self.spg)
    keywords = {"dropout_p": dropout_p, "softmax_scale": softmax_scale, "causal": causal}
    if attention_mask is not None:
        keywords["attention_mask"] = binding.gather_rows(attention_mask, call)
        keywords["seqlens_in_batch"] = seqlens_in_batch
    context = self.local_attn(q, k, v, *args, **keywords)
    if isinstance(context, tuple):
        context = context[0]
    return binding.output_head_to_seq(context, query.shape[2], call)


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise VilaNotFoundError(
            "ulysses.vila.apply() patches VILA's %s, which could not be imported (%s): install "
            "VILA (the llava package) first, or import ulysses.torch's classes directly"
            % (name, error)) from error


def _replace_forward(attention_module):
    """VILA's UlyssesAttention.forward replaced by one_exchange_forward; returns
    what was replaced, as replace_classes does."""
    attention_class = getattr(attention_module, "UlyssesAttention", None)
    if attention_class is None:
        raise VilaNotFoundError("%s has no UlyssesAttention: not the VILA this integration knows"
                                % ATTENTION_MODULE)
    if attention_class.forward is one_exchange_forward:
        return []
    original = attention_class.forward
    attention_class.forward = one_exchange_forward
    return [(attention_class, "forward", original)]


def apply(replacements=None, make=reference_format, attention=False):
    """Runs VILA's Ulysses exchanges on ulysses (see the module's docstring).

    replacements: {class name: replacement class}; default ulysses.torch's
    SeqAllToAll4D, SeqAllToAll5D and SeqAllGather. make(lengths, device): the
    globals' value (default: the reference's format). attention: also replace
    VILA's UlyssesAttention.forward with one_exchange_forward. Returns the
    replaced attributes as "module.name" strings. Calling it again patches the
    llava modules loaded since. Raises VilaNotFoundError without VILA.
    """
    all_to_all = _import(ALL_TO_ALL_MODULE)
    globals_module = _import(GLOBALS_MODULE)
    if replacements is None:
        from . import torch as binding
        replacements = {name: getattr(binding, name) for name in CLASS_NAMES}
    by_original = {}
    for name, replacement in replacements.items():
        current = getattr(all_to_all, name, None)
        if current is None:
            raise VilaNotFoundError("%s has no %s: not the VILA this integration knows"
                                    % (ALL_TO_ALL_MODULE, name))
        # After a first apply() the module holds ours; the reference's is kept.
        original = _originals.get(name, current)
        if original is not replacement:
            _originals[name] = original
            by_original[original] = replacement
    replaced = replace_classes(by_original)
    names = ["%s.%s" % (module.__name__, attribute) for module, attribute, _ in replaced]
    if attention:
        forward = _replace_forward(_import(ATTENTION_MODULE))
        replaced += forward
        names += ["%s.UlyssesAttention.forward" % ATTENTION_MODULE for _ in forward]
    _replaced.extend(replaced)
    if _writer is None or _writer.globals_module is not globals_module or _writer.make is not make:
        attach_globals(globals_module, make)
    return names


def revert():
    """Puts the reference's classes (and UlyssesAttention.forward) back where
    apply() replaced them and stops updating VILA's globals."""
    while _replaced:
        module, attribute, original = _replaced.pop()
        setattr(module, attribute, original)
    _originals.clear()
    detach_globals()
