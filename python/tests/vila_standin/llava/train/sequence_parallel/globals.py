"""Stand-in for llava.train.sequence_parallel.globals: the sequence-parallel
group and the per-rank lengths that the last seq -> head learned, as a list of
one-element int64 tensors (set_ulysses_seq_len / get_ulysses_seq_len). Imports
nothing at import time, as the tests of ulysses.vila run without torch."""

_state = {"group": None, "seq_len": None}


def set_ulysses_sp_pg(group):
    _state["group"] = group


def get_ulysses_sp_pg():
    return _state["group"]


def get_ulysses_sp_size():
    import torch.distributed as dist
    return dist.get_world_size(_state["group"])


def get_ulysses_sp_rank():
    import torch.distributed as dist
    return dist.get_rank(_state["group"])


def set_ulysses_seq_len(seq_len):
    _state["seq_len"] = seq_len


def get_ulysses_seq_len():
    return _state["seq_len"]
