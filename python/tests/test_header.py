"""The Python mirror against include/ulysses.h: every enum value, numeric macro,
struct layout and function prototype, so that a change to the header that the
package does not follow fails here (no C compiler involved)."""

import ctypes
import re
import unittest

import cheader
import ulysses
from ulysses import _lib

ENUMS = {
    # C typedef: (Python enum, prefix stripped from its enumerators)
    "ulyssesResult_t": (ulysses.Result, "ulysses"),
    "ulyssesOrder_t": (ulysses.Order, "ulyssesOrder"),
    "ulyssesDataType_t": (ulysses.DataType, "ulyssesType"),
    "ulyssesOp_t": (ulysses.Op, "ulyssesOp"),
    "ulyssesSegmentPlace_t": (ulysses.SegmentPlace, "ulyssesSegment"),
    "ulyssesPath_t": (ulysses.Path, "ulyssesPath"),
}
# Enumerators that count rather than name a value: module constants.
ENUM_CONSTANTS = {"ulyssesNumResults": "NUM_RESULTS"}

STRUCTS = {
    "ulyssesLayout_t": ulysses.Layout,
    "ulyssesSegment_t": ulysses.Segment,
    "ulyssesConfig_t": ulysses.Config,
}

MACROS = {
    "ULYSSES_MAJOR": "MAJOR",
    "ULYSSES_MINOR": "MINOR",
    "ULYSSES_PATCH": "PATCH",
    "ULYSSES_MAX_LENGTH": "MAX_LENGTH",
    "ULYSSES_MAX_TENSORS": "MAX_TENSORS",
    "ULYSSES_WORKSPACE_ALIGNMENT": "WORKSPACE_ALIGNMENT",
    "ULYSSES_CONFIG_MAGIC": "CONFIG_MAGIC",
    "ULYSSES_CONFIG_UNDEF_INT": "CONFIG_UNDEF_INT",
    "ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY": "STATUS_LENGTH_ABOVE_CAPACITY",
    "ULYSSES_STATUS_NEGATIVE_LENGTH": "STATUS_NEGATIVE_LENGTH",
}
# Macros with no numeric mirror: the include guard, the export macro, the
# version code, the config initializer and the struct sizes (checked below).
STRUCT_SIZE_MACROS = {
    "ULYSSES_LAYOUT_SIZE_MIN": "offsetof(ulyssesLayout_t, queryHeads)",
    "ULYSSES_SEGMENT_SIZE_MIN": "(sizeof(ulyssesSegment_t))",
}
NOT_NUMERIC = {"ULYSSES_H_", "ULYSSES_API", "ULYSSES_VERSION_CODE",
               "ULYSSES_CONFIG_INITIALIZER"} | set(STRUCT_SIZE_MACROS)

HANDLES = {"ulyssesComm_t", "ulyssesPlan_t", "ncclComm_t", "cudaStream_t"}

# C scalar types: (size, alignment) on this ABI (LP64).
C_SCALARS = {
    "int64_t": (8, 8),
    "int": (4, 4),
    "unsigned int": (4, 4),
    "size_t": (ctypes.sizeof(ctypes.c_size_t), ctypes.alignment(ctypes.c_size_t)),
}


def expected_ctype(ctype, name, enum_names):
    """The ctypes type a C parameter maps to: handles, streams and device memory
    are c_void_p (ints from Python), host out-parameters typed pointers."""
    structs = {"const %s*" % c: ctypes.POINTER(py) for c, py in STRUCTS.items()}
    structs.update({"%s*" % c: ctypes.POINTER(py) for c, py in STRUCTS.items()})
    if ctype in HANDLES:
        return ctypes.c_void_p
    if ctype.rstrip("*") in HANDLES and ctype.endswith("*"):
        return ctypes.POINTER(ctypes.c_void_p)
    if ctype in enum_names:
        return ctypes.c_int
    if ctype.endswith("*") and ctype[:-1] in enum_names:
        return ctypes.POINTER(ctypes.c_int)
    if ctype in structs:
        return structs[ctype]
    if ctype in ("const void*", "void*"):
        return ctypes.c_void_p
    if ctype in ("const void* const*", "void* const*"):
        return ctypes.POINTER(ctypes.c_void_p)
    if ctype in ("const int64_t*", "int64_t*", "uint32_t*"):
        if name.startswith("device"):
            return ctypes.c_void_p
        return ctypes.POINTER(ctypes.c_int64 if "int64" in ctype else ctypes.c_uint32)
    scalars = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "size_t": ctypes.c_size_t,
               "int*": ctypes.POINTER(ctypes.c_int), "size_t*": ctypes.POINTER(ctypes.c_size_t),
               "const char*": ctypes.c_char_p, "void* *": ctypes.POINTER(ctypes.c_void_p),
               "const char* *": ctypes.POINTER(ctypes.c_char_p)}
    if ctype in scalars:
        return scalars[ctype]
    raise AssertionError("no ctypes mapping for the C type %r (parameter %s)" % (ctype, name))


class EnumTest(unittest.TestCase):
    def test_every_enum_is_mirrored_with_the_same_values(self):
        enums = cheader.enums()
        self.assertEqual(set(enums), set(ENUMS), "the header's enums changed")
        for typedef, entries in enums.items():
            python_enum, prefix = ENUMS[typedef]
            header_members = {}
            for enumerator, value in entries:
                if enumerator in ENUM_CONSTANTS:
                    self.assertEqual(getattr(ulysses, ENUM_CONSTANTS[enumerator]), value, enumerator)
                    continue
                self.assertTrue(enumerator.startswith(prefix), enumerator)
                header_members[cheader.camel_to_upper_snake(enumerator[len(prefix):])] = value
            python_members = {member.name: member.value for member in python_enum}
            self.assertEqual(python_members, header_members, typedef)

    def test_result_names_are_the_librarys(self):
        for enumerator, value in cheader.enums()["ulyssesResult_t"]:
            if enumerator in ENUM_CONSTANTS:
                self.assertEqual(ulysses.get_error_string(value), "unknown ulyssesResult_t")
            else:
                self.assertEqual(ulysses.get_error_string(value), enumerator)


class MacroTest(unittest.TestCase):
    def test_numeric_macros(self):
        defines = cheader.defines()
        known = {}
        numeric = [name for name in defines if name not in NOT_NUMERIC]
        self.assertEqual(set(numeric), set(MACROS), "the header's macros changed")
        for name in numeric:
            known[name] = cheader.evaluate(defines[name], known)
            self.assertEqual(getattr(ulysses, MACROS[name]), known[name], name)

    def test_struct_size_macros(self):
        defines = cheader.defines()
        for name, text in STRUCT_SIZE_MACROS.items():
            self.assertEqual(defines[name], text, name)
        self.assertEqual(ulysses.LAYOUT_SIZE_MIN, ulysses.Layout.queryHeads.offset)
        self.assertEqual(ulysses.SEGMENT_SIZE_MIN, ctypes.sizeof(ulysses.Segment))

    def test_version_code(self):
        defines = cheader.defines()
        self.assertEqual(defines["ULYSSES_VERSION_CODE"],
                         "ULYSSES_VERSION(ULYSSES_MAJOR, ULYSSES_MINOR, ULYSSES_PATCH)")
        version = re.search(r"#define\s+ULYSSES_VERSION\(X, Y, Z\)\s+(.*)", cheader.text()).group(1)
        self.assertEqual(" ".join(version.split()), "((X) * 10000 + (Y) * 100 + (Z))")
        major, minor, patch = (int(defines[k]) for k in ("ULYSSES_MAJOR", "ULYSSES_MINOR",
                                                         "ULYSSES_PATCH"))
        self.assertEqual(ulysses.VERSION_CODE, major * 10000 + minor * 100 + patch)

    def test_config_initializer(self):
        body = re.search(r"#define\s+ULYSSES_CONFIG_INITIALIZER\s*\\?\s*\{(.*?)\}",
                         cheader.text(), re.S).group(1)
        items = [" ".join(item.split()) for item in body.replace("\\", " ").split(",")]
        defines = cheader.defines()
        values = []
        for item in items:
            if item == "sizeof(ulyssesConfig_t)":
                values.append(ctypes.sizeof(ulysses.Config))
            elif item == "ULYSSES_VERSION_CODE":
                values.append(ulysses.VERSION_CODE)
            else:
                values.append(cheader.evaluate(defines[item], {}))
        config = ulysses.Config()
        self.assertEqual([getattr(config, name) for name, _ in ulysses.Config._fields_], values)


class StructTest(unittest.TestCase):
    def test_struct_layouts_match_the_header(self):
        structs = cheader.structs()
        enum_names = set(cheader.enums())
        self.assertEqual(set(structs), set(STRUCTS), "the header's structs changed")
        for typedef, fields in structs.items():
            python = STRUCTS[typedef]
            self.assertEqual([name for name, _ in python._fields_], [f for _, f in fields], typedef)
            offset, struct_alignment = 0, 1
            for ctype, field in fields:
                size, alignment = (4, 4) if ctype in enum_names else C_SCALARS[ctype]
                offset = (offset + alignment - 1) // alignment * alignment
                member = getattr(python, field)
                self.assertEqual((member.offset, member.size), (offset, size),
                                 "%s.%s" % (typedef, field))
                offset += size
                struct_alignment = max(struct_alignment, alignment)
            size = (offset + struct_alignment - 1) // struct_alignment * struct_alignment
            self.assertEqual(ctypes.sizeof(python), size, typedef)
            self.assertEqual(ctypes.alignment(python), struct_alignment, typedef)


class PrototypeTest(unittest.TestCase):
    def test_every_function_is_declared_with_the_headers_types(self):
        functions = cheader.functions()
        enum_names = set(cheader.enums())
        self.assertEqual([f[0] for f in functions], list(_lib.PROTOTYPES),
                         "the header's functions (or their order) changed")
        for name, returns, parameters in functions:
            restype, argtypes = _lib.PROTOTYPES[name]
            self.assertIs(restype, expected_ctype(returns, "", enum_names), name)
            self.assertEqual(len(argtypes), len(parameters), name)
            for (ctype, param), actual in zip(parameters, argtypes):
                self.assertIs(actual, expected_ctype(ctype, param, enum_names),
                              "%s(%s %s)" % (name, ctype, param))

    def test_the_loaded_library_has_them_declared(self):
        cdll = ulysses.library().cdll
        for name, (restype, argtypes) in _lib.PROTOTYPES.items():
            function = getattr(cdll, name)
            self.assertIs(function.restype, restype, name)
            self.assertEqual(list(function.argtypes), list(argtypes), name)

    def test_every_function_has_a_python_wrapper(self):
        for name, _, _ in cheader.functions():
            snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name[len("ulysses"):]).lower()
            self.assertTrue(callable(getattr(ulysses, snake, None)),
                            "%s has no ulysses.%s" % (name, snake))


if __name__ == "__main__":
    unittest.main()
