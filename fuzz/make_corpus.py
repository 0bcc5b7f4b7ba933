#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_plan (fuzz/corpus/) in the input format
that fuzz/fuzz_plan.c's header comment describes. Rerun after changing that
format: python3 fuzz/make_corpus.py (it replaces every file of fuzz/corpus/
but the regress_* inputs the fuzzer found)."""
import os
import struct

INT_MIN, INT_MAX = -2**31, 2**31 - 1
I64_MIN, I64_MAX = -2**63, 2**63 - 1
SPECIALS = [
    0, -1, -2, I64_MIN, I64_MIN + 1, I64_MAX, I64_MAX - 1, I64_MAX // 2,
    I64_MAX // 3, 1 << 62, (1 << 62) + 1, 1 << 56,
    (1 << 56) - 1, (1 << 56) + 1, 1 << 48, 1 << 40,
    1 << 32, (1 << 32) - 1, (1 << 32) + 1, INT_MAX,
    INT_MAX - 1, INT_MAX + 1, INT_MIN, 3037000499, 3037000500,
    1 << 28, 1 << 24, 1 << 20, 65535, 65536,
    255, 256, 127, 128, 129, 17, 16, 15, 3, 5]
INT_SPECIALS = [0, -1, -2, INT_MIN, INT_MAX, INT_MAX - 1, 1, 2,
                3, 4, 5, 6, 7, 8, 9, 15,
                16, 17, 31, 32, 33, 64, 100, 127,
                128, 129, 130, 200, 255, 256, 257, 300]
SIZES = [1, 2, 4, 8, 16]
OUT_NULL, LENGTHS_NULL, LAYOUTS_NULL, DEVICE_NULL, DEVICE_MIS4, DEVICE_MIS1 = 31, 30, 29, 28, 27, 26
# Another header's ulyssesLayout_t (fuzz_plan.c's ODD_LAYOUT_*).
(LAYOUT_OLDEST, LAYOUT_NEWER, LAYOUT_UNKNOWN_FIELD, LAYOUT_ODD_SIZE, LAYOUT_MIXED_SIZES,
 LAYOUT_TOO_SMALL) = 25, 24, 23, 22, 21, 20
F32, F16, BF16 = 1, 2, 3


def num(value, lo, span):
    if lo <= value < lo + span:
        return bytes([value - lo])
    if value in SPECIALS:
        return bytes([208 + SPECIALS.index(value)])
    return bytes([252]) + struct.pack('<q', value)


def int_num(value, lo, span):
    if lo <= value < lo + span:
        return bytes([value - lo])
    return bytes([224 + INT_SPECIALS.index(value)])


def layout(batch=1, heads=4, head_dim=2, element_size=2, packed=1, order=0, query_mult=0,
           float_type=False):
    """A fresh layout; query_mult k > 0 makes queryHeads = heads * k (a kv
    tensor on its own) with a float dataType matching element_size."""
    out = bytes([0]) + num(batch, 1, 3) + num(heads, 1, 8) + num(head_dim, 1, 6)
    out += bytes([SIZES.index(element_size)])
    out += bytes([1 if packed == 3 else 0 if packed == 1 else 224 + INT_SPECIALS.index(packed)])
    out += bytes([order if order in (0, 1) else 224 + INT_SPECIALS.index(order)])
    out += bytes([0 if query_mult == 0 else 128 + query_mult - 1])
    out += bytes([0 if float_type or query_mult else 1])
    return out


def raw_layout(batch, heads, head_dim, element_size_byte, packed_byte, order_byte, qh_bytes, type_byte):
    return (bytes([0]) + num(batch, 1, 3) + num(heads, 1, 8) + num(head_dim, 1, 6) +
            bytes([element_size_byte, packed_byte, order_byte]) + qh_bytes + bytes([type_byte]))


def copy_previous():
    return bytes([1])


def kv_of_previous(kv_heads, bf16=False):
    """The previous (query) tensor's kv tensor: queryHeads = its heads."""
    return bytes([2 | (4 if bf16 else 0)]) + num(kv_heads, 1, 4)


def case(n_ranks, rank, lengths, layouts, capacity=False, oddity=0, n_tensors=None,
         device=b'', sim=0, pick=0, call=b''):
    """lengths: one int (pattern 0) or a list (pattern 1)."""
    pattern = 0 if isinstance(lengths, int) else 1
    out = bytes([int(capacity) | pattern << 1 | oddity << 3])
    out += int_num(n_ranks, 1, 16)
    out += bytes([rank])
    if pattern == 0:
        out += num(lengths, 0, 8)
    else:
        out += b''.join(num(v, 0, 8) for v in lengths)
    out += int_num(n_tensors if n_tensors is not None else len(layouts), 1, 3)
    out += b''.join(layouts)
    if capacity:
        out += device if device else bytes([0])
    out += bytes([sim, pick]) + call
    return out


def call(op=0, stage=False, stage_send=True, n_tensors=0, comm=0, arrays=0, pointers=b'',
         size=0, device=0):
    """The pointer-pattern call; pointers: one pattern (1-3 bytes) per range,
    send buffers, receive buffers, then the workspace."""
    return (bytes([op, 3 if stage else 0, 1 if stage_send else 0, n_tensors, comm, arrays]) +
            pointers + bytes([size, device]))


def ptr_own():
    return bytes([0])


def ptr(kind, other=0, offset=0):
    """kind: 0 NULL, 1 same as other, 2 inside other, 3 misaligned, 4 right
    after other, 5 right before other, 6 overlapping other's last byte."""
    return bytes([160 + kind, other, offset])


QKV = [layout(batch=2, heads=8, head_dim=4, element_size=2)] * 3
SEEDS = {
    # Exact mode, one tensor, uneven lengths with a zero.
    'exact_basic': case(4, 1, [3, 0, 5, 2], [layout(batch=2, heads=8, head_dim=4, element_size=2)]),
    'exact_sbhd': case(4, 2, [3, 0, 5, 2], [layout(batch=2, heads=6, head_dim=3, element_size=4, order=1)]),
    'exact_batch1_direct': case(3, 0, [2, 1, 3], [layout(batch=1, heads=3, head_dim=8, element_size=1)]),
    'exact_one_rank': case(1, 0, 5, [layout(batch=3, heads=2, head_dim=2, element_size=8)]),
    'exact_heads_below_ranks': case(8, 5, [1, 2, 0, 1, 3, 1, 0, 2], [layout(batch=2, heads=3, head_dim=2, element_size=2)]),
    'exact_16_ranks': case(16, 15, 1, [layout(batch=1, heads=16, head_dim=1, element_size=16)]),
    'exact_packed_qkv': case(4, 3, [2, 2, 1, 0], [layout(batch=2, heads=4, head_dim=2, element_size=2, packed=3)]),
    'exact_zero_lengths': case(4, 0, 0, [layout()], sim=1),
    'exact_multi_qkv': case(4, 1, [1, 2, 3, 4], QKV),
    'exact_multi_8': case(2, 1, [2, 1], [layout(heads=2)] + [copy_previous()] * 7),
    'exact_129_ranks': case(129, 128, 1, [layout(batch=1, heads=1, head_dim=1, element_size=1)]),
    'exact_300_ranks': case(300, 7, 2, [layout(batch=2, heads=8, head_dim=2, element_size=2)]),
    # Capacity mode: real lengths below, at and outside the capacities.
    'capacity_basic': case(4, 1, [3, 1, 5, 2], [layout(batch=2, heads=8, head_dim=4, element_size=2)],
                           capacity=True, device=bytes([128, 1, 0, 3, 2])),
    'capacity_full': case(3, 2, [2, 2, 2], [layout(batch=3, heads=5, head_dim=2, element_size=4, order=1)],
                          capacity=True),
    'capacity_multi': case(2, 0, [4, 3], QKV, capacity=True, device=bytes([130, 1, 2])),
    'capacity_above': case(4, 2, 3, [layout(batch=2, heads=4)], capacity=True, device=bytes([224, 1, 1])),
    'capacity_negative': case(4, 3, 3, [layout(batch=1, heads=8, order=1)], capacity=True,
                              device=bytes([224, 3, 0])),
    'capacity_130_ranks': case(130, 0, 1, [layout(batch=1, heads=2, head_dim=1, element_size=4)],
                               capacity=True),
    # Grouped-query attention: kv heads fewer than, equal to and more than
    # the ranks, fp16, bf16 and fp32, alone and after their query tensor.
    'gqa_shared_fp16': case(4, 1, [2, 1, 3, 0], [layout(batch=2, heads=8, head_dim=4, element_size=2),
                                                 kv_of_previous(2)]),
    'gqa_shared_bf16_8': case(8, 6, [1, 0, 2, 1, 1, 3, 0, 1], [layout(batch=1, heads=8, head_dim=2, element_size=2),
                                                               kv_of_previous(1, bf16=True)]),
    'gqa_kv_alone_fp32': case(4, 0, 2, [layout(batch=2, heads=2, head_dim=2, element_size=4, query_mult=4)]),
    'gqa_unshared': case(2, 1, [3, 2], [layout(batch=1, heads=4, head_dim=2, element_size=2, query_mult=2)]),
    'gqa_capacity': case(3, 1, [3, 2, 2], [layout(batch=2, heads=6, head_dim=2, element_size=4),
                                           kv_of_previous(3)], capacity=True, device=bytes([140, 1, 0, 2])),
    'gqa_qkv_sbhd': case(5, 4, [2, 1, 0, 1, 2], [layout(batch=2, heads=5, head_dim=2, element_size=2, order=1),
                                                 kv_of_previous(1), copy_previous()]),
    'gqa_opaque_refused': case(4, 0, 1, [raw_layout(1, 1, 2, 1, 0, 0, bytes([131]), 192)],
                               call=call(op=1, pointers=ptr_own() * 3)),
    # Refusals: every class of bad argument.
    'bad_out_null': case(2, 0, 1, [layout()], oddity=OUT_NULL),
    'bad_lengths_null': case(2, 0, 1, [layout()], oddity=LENGTHS_NULL),
    'bad_layouts_null': case(2, 1, 1, [layout()], oddity=LAYOUTS_NULL),
    'bad_device_null': case(2, 0, 1, [layout()], capacity=True, oddity=DEVICE_NULL),
    'bad_device_misaligned': case(2, 0, 1, [layout()], capacity=True, oddity=DEVICE_MIS4),
    'bad_ranks_zero': case(0, 0, 1, [layout()]),
    'bad_rank': case(4, 241, 1, [layout()]),
    'bad_tensors_zero': case(2, 0, 1, [layout()], n_tensors=0),
    'bad_tensors_nine': case(2, 0, 1, [layout()] + [copy_previous()] * 7, n_tensors=9),
    'bad_length_negative': case(3, 0, [1, -1, 2], [layout()]),
    'bad_length_long': case(2, 0, [1, 2**31], [layout()]),
    'bad_element_size': case(2, 0, 1, [raw_layout(1, 2, 2, 224 + INT_SPECIALS.index(3), 0, 0, bytes([0]), 1)]),
    'bad_packed': case(2, 0, 1, [raw_layout(1, 2, 2, 1, 224 + INT_SPECIALS.index(2), 0, bytes([0]), 1)]),
    'bad_order': case(2, 0, 1, [raw_layout(1, 2, 2, 1, 0, 224 + INT_SPECIALS.index(2), bytes([0]), 1)]),
    'bad_query_heads': case(2, 0, 1, [raw_layout(1, 4, 2, 1, 0, 0, bytes([208 + SPECIALS.index(5)]), 1)]),
    'bad_data_type': case(2, 0, 1, [raw_layout(1, 2, 2, 1, 0, 0, bytes([0]), 192 + INT_SPECIALS.index(F32))]),
    'bad_size_overflow': case(2, 0, 2**31 - 1, [layout(batch=2**24, heads=8, head_dim=4, element_size=2)]),
    'big_accepted': case(2, 1, 2**31 - 1, [layout(batch=2**20, heads=1, head_dim=1, element_size=1)]),
    # Accepted because no rank has a row: the harness's own cost estimate
    # once added to headDim in 64 bits.
    'gqa_head_dim_int64_max': case(2, 0, 0, [raw_layout(1, 1, I64_MAX, 0, 0, 0, bytes([128]), 0)]),
    # Layouts of another header's size: the oldest (no queryHeads, no
    # dataType) and a newer one with its extra field unset are read; a set
    # unknown field, a size not in whole words, entries of two sizes and a
    # size below the oldest are refused.
    'abi_layout_oldest': case(3, 1, [2, 1, 3], QKV[:2], oddity=LAYOUT_OLDEST),
    'abi_layout_newer': case(3, 2, [2, 1, 3], QKV, oddity=LAYOUT_NEWER),
    'abi_layout_unknown_field': case(2, 0, [2, 2], QKV[:2], oddity=LAYOUT_UNKNOWN_FIELD),
    'abi_layout_odd_size': case(2, 1, [2, 2], QKV[:2], oddity=LAYOUT_ODD_SIZE),
    'abi_layout_mixed_sizes': case(2, 0, [2, 2], QKV[:2], oddity=LAYOUT_MIXED_SIZES),
    'abi_layout_too_small': case(2, 0, [2, 2], [layout()], oddity=LAYOUT_TOO_SMALL),
    # Call-time validation with made-up pointers.
    'call_overlap': case(2, 0, [2, 3], [layout(batch=2, heads=4)],
                         call=call(op=0, pointers=ptr_own() + ptr(1, 0) + ptr_own())),
    'call_workspace_null': case(2, 1, [2, 3], [layout(batch=2, heads=4)],
                                call=call(op=1, pointers=ptr_own() + ptr_own() + ptr(0))),
    'call_workspace_misaligned': case(3, 1, [1, 1, 1], [layout(batch=2, heads=3)],
                                      call=call(op=2, pointers=ptr_own() + ptr_own() + ptr(3, 0, 5))),
    'call_workspace_small': case(2, 0, [2, 2], [layout(batch=2, heads=4)], call=call(op=0, pointers=ptr_own() * 3, size=192)),
    'call_adjacent': case(2, 0, [2, 2], QKV[:2],
                          call=call(op=0, pointers=ptr_own() * 2 + ptr(4, 0) + ptr(5, 1) + ptr_own())),
    'call_stage_capacity': case(2, 1, [2, 1], [layout(batch=2, heads=4)], capacity=True,
                                call=call(op=1, stage=True, stage_send=False, pointers=ptr_own() * 3, device=224)),
}

if __name__ == '__main__':
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = os.path.join(here, 'corpus')
    # regress_* files are inputs the fuzzer found, kept byte for byte: they
    # stay; every other file is this script's and is replaced.
    os.makedirs(corpus, exist_ok=True)
    for name in os.listdir(corpus):
        if not name.startswith('regress_'):
            os.remove(os.path.join(corpus, name))
    for name, data in sorted(SEEDS.items()):
        assert len(data) < 200, (name, len(data))
        with open(os.path.join(corpus, name), 'wb') as f:
            f.write(data)
    print(f'{len(SEEDS)} seeds in {corpus}')
