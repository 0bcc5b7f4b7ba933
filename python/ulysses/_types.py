"""The C API's constants, enums and structs, mirrored for ctypes.

Every value here is copied from include/ulysses.h; tests/test_header.py parses
the header and fails on any drift (a renumbered code, a new field, a new
function), so this file is updated together with the header.
"""

import ctypes
import enum
import functools

# The header this package was written for (ULYSSES_MAJOR/MINOR/PATCH).
MAJOR = 0
MINOR = 1
PATCH = 0


def version_code(major, minor, patch):
    """ULYSSES_VERSION(X, Y, Z): the integer ulyssesGetVersion reports."""
    return major * 10000 + minor * 100 + patch


def version_tuple(code):
    """The (major, minor, patch) of a ULYSSES_VERSION_CODE."""
    return code // 10000, code // 100 % 100, code % 100


VERSION_CODE = version_code(MAJOR, MINOR, PATCH)

MAX_LENGTH = 2**31 - 1             # ULYSSES_MAX_LENGTH: rows one rank may hold
MAX_TENSORS = 8                    # ULYSSES_MAX_TENSORS: tensors one call moves
WORKSPACE_ALIGNMENT = 16           # ULYSSES_WORKSPACE_ALIGNMENT, bytes
CONFIG_MAGIC = 0x756C7973          # ULYSSES_CONFIG_MAGIC ("ulys")
CONFIG_UNDEF_INT = -(2**31)        # ULYSSES_CONFIG_UNDEF_INT (INT_MIN)
STATUS_LENGTH_ABOVE_CAPACITY = 0x1  # ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY
STATUS_NEGATIVE_LENGTH = 0x2        # ULYSSES_STATUS_NEGATIVE_LENGTH


class Result(enum.IntEnum):
    """ulyssesResult_t (ulyssesErrorNullPointer is Result.ERROR_NULL_POINTER)."""
    SUCCESS = 0
    ERROR_INVALID_ARGUMENT = 1
    ERROR_NULL_POINTER = 2
    ERROR_MISALIGNED_POINTER = 3
    ERROR_SIZE_OVERFLOW = 4
    ERROR_INVALID_LENGTH = 5
    ERROR_LENGTH_EXCEEDS_CAPACITY = 6
    ERROR_UNSUPPORTED_ELEMENT_SIZE = 7
    ERROR_LAYOUT_MISMATCH = 8
    ERROR_COMM_MISMATCH = 9
    ERROR_WORKSPACE_TOO_SMALL = 10
    ERROR_BUFFER_OVERLAP = 11
    ERROR_CUDA_ERROR = 12
    ERROR_NCCL_ERROR = 13
    ERROR_SYSTEM_ERROR = 14
    ERROR_UNSUPPORTED = 15
    ERROR_HEAD_GROUP_MISMATCH = 16
    ERROR_PLAN_MISMATCH = 17
    ERROR_INVALID_USAGE = 18


NUM_RESULTS = 19  # ulyssesNumResults


class Order(enum.IntEnum):
    """ulyssesOrder_t: batch first [B, L, ...] or sequence first [L, B, ...]."""
    BSHD = 0
    SBHD = 1


class DataType(enum.IntEnum):
    """ulyssesDataType_t: how head -> seq reads kv replicas it sums."""
    OPAQUE = 0
    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3


class Op(enum.IntEnum):
    """ulyssesOp_t."""
    SEQ_TO_HEAD = 0
    HEAD_TO_SEQ = 1
    ALL_GATHER = 2


class SegmentPlace(enum.IntEnum):
    """ulyssesSegmentPlace_t: where a segment's offset counts from."""
    IN_WORKSPACE = 0
    IN_USER_BUFFER = 1


class Path(enum.IntEnum):
    """ulyssesPath_t: how an exchange moves its data (get_exchange_path)."""
    STAGED = 0
    ONE_PASS = 1


# C enums are int-sized here (every value fits an int).
_c_enum = ctypes.c_int


def refuses_c_names(**renamed):
    """A decorator: the function refuses the C API's camelCase keywords that the
    Python API spells in snake_case, with a TypeError naming the new keyword
    (renamed: C name=Python name)."""
    def decorate(function):
        @functools.wraps(function)
        def checked(*args, **kwargs):
            for c_name, name in renamed.items():
                if c_name in kwargs:
                    raise TypeError("%s() takes %s=, not the C name %s="
                                    % (function.__qualname__.split(".")[0], name, c_name))
            return function(*args, **kwargs)
        return checked
    return decorate


def _c_field(c_name, convert=None):
    """A snake_case attribute of a ctypes struct that reads and writes its C field."""
    def read(self):
        value = getattr(self, c_name)
        return convert(value) if convert is not None else value

    def write(self, value):
        setattr(self, c_name, int(value))
    return property(read, write, doc="The C field %s." % c_name)


class Layout(ctypes.Structure):
    """ulyssesLayout_t: one tensor's shape, described on its sequence side.

    Layout(batch, heads, head_dim, element_size, packed=1, order=Order.BSHD,
    query_heads=0, dtype=DataType.OPAQUE); size is filled in (sizeof as ctypes
    lays it out). The fields keep the header's names inside (headDim, ...); the
    snake_case attributes read and write them.
    """
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("batch", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("headDim", ctypes.c_int64),
        ("elementSize", ctypes.c_int64),
        ("packed", ctypes.c_int),
        ("order", _c_enum),
        ("queryHeads", ctypes.c_int64),
        ("dataType", _c_enum),
    ]
    # The constructor's keywords, in the order of the fields after size.
    KEYWORDS = ("batch", "heads", "head_dim", "element_size", "packed", "order", "query_heads",
                "dtype")

    head_dim = _c_field("headDim")
    element_size = _c_field("elementSize")
    query_heads = _c_field("queryHeads")
    dtype = _c_field("dataType", DataType)

    @refuses_c_names(headDim="head_dim", elementSize="element_size", queryHeads="query_heads",
                     dataType="dtype")
    def __init__(self, batch, heads, head_dim, element_size, packed=1, order=Order.BSHD,
                 query_heads=0, dtype=DataType.OPAQUE):
        super().__init__(ctypes.sizeof(Layout), batch, heads, head_dim, element_size, packed,
                         int(order), query_heads, int(dtype))

    def key(self):
        """The fields after size as a tuple, in the constructor's order
        (hashable: plans are cached by it)."""
        return tuple(getattr(self, name) for name, _ in self._fields_[1:])

    def __eq__(self, other):
        return isinstance(other, Layout) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __repr__(self):
        fields = ", ".join("%s=%r" % pair for pair in zip(self.KEYWORDS, self.key()))
        return "Layout(%s)" % fields


class Segment(ctypes.Structure):
    """ulyssesSegment_t: where one message of one tensor lives."""
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("place", _c_enum),
        ("offset", ctypes.c_size_t),
        ("bytes", ctypes.c_size_t),
    ]

    def __repr__(self):
        return "Segment(place=%s, offset=%d, bytes=%d)" % (
            SegmentPlace(self.place).name, self.offset, self.bytes)


# ULYSSES_LAYOUT_SIZE_MIN: the smallest ulyssesLayout_t.size (the fields through order).
LAYOUT_SIZE_MIN = Layout.queryHeads.offset
# ULYSSES_SEGMENT_SIZE_MIN: the smallest ulyssesSegment_t.size.
SEGMENT_SIZE_MIN = ctypes.sizeof(Segment)


class Config(ctypes.Structure):
    """ulyssesConfig_t, filled as ULYSSES_CONFIG_INITIALIZER fills it.

    check_plans, one_pass: None leaves the library's default (the ULYSSES_CHECK
    and ULYSSES_ONE_PASS environment variables), True or False set it. The
    fields keep the header's names inside (checkPlans, onePass).
    """
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint),
        ("version", ctypes.c_uint),
        ("checkPlans", ctypes.c_int),
        ("onePass", ctypes.c_int),
    ]

    check_plans = _c_field("checkPlans")
    one_pass = _c_field("onePass")

    @refuses_c_names(checkPlans="check_plans", onePass="one_pass")
    def __init__(self, check_plans=None, one_pass=None):
        def setting(value):
            return CONFIG_UNDEF_INT if value is None else int(bool(value))
        super().__init__(ctypes.sizeof(Config), CONFIG_MAGIC, VERSION_CODE, setting(check_plans),
                         setting(one_pass))
