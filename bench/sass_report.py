#!/usr/bin/env python3
"""The kernels seen from inside, without a GPU: for each kernel of the given
objects (their sm_90 code, or --arch's), what ptxas gave it (registers and
stack frame, from cuobjdump -res-usage), its local-memory instructions
(STL/LDL: spills or a stack array), and its steady loops from the SASS
(cuobjdump -sass):

  copy loop  an innermost loop that both loads and stores global memory
             and adds no floats (the pack / unpack / one-pass word loop);
  sum loop   an innermost loop that loads global memory and adds floats
             (the head sum's loop over replicas and units).

For each loop: its SASS instructions per 16 bytes it loads (instructions in
the loop's range, inner loops counted once, over its loads' bytes / 16) and
the subroutine calls inside it: nvcc compiles a 64-bit division or modulo to
a CALL to a routine of about a hundred instructions, and the kernels call no
other subroutine.

With --bounds FILE it checks each kernel against FILE's lines

    KERNEL  LOOP  WORD  MAX_INSTRUCTIONS_PER_16B  CALLS

    KERNEL  frame  MAX_STACK_BYTES  MAX_REGISTERS

(KERNEL as c++filt prints its name and template arguments, without spaces;
LOOP copy or sum; WORD the loop's widest load in bytes; CALLS the most
subroutine calls any such loop may hold) and exits 1 when a loop is
above its bound, holds more calls or any local-memory access (STL/LDL: a
spill or a stack array inside the steady loop), a kernel's stack frame or
registers grow past its frame line (spills outside the loops: a run-time
word size or a table brought back), or a kernel named in FILE is missing,
or has no such loop. Exits 77 (Meson's "skipped") where cuobjdump is not found
(on PATH, beside nvcc, or in ULYSSES_CUOBJDUMP) or the objects hold no code
of the architecture.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)")
# Global loads and stores, and the generic ones of pointers that may be
# global (the NCCL kernel's peer addresses).
GLOBAL_LOADS = ("LDG", "LD")
GLOBAL_STORES = ("STG", "ST")


def find_cuobjdump():
    named = os.environ.get("ULYSSES_CUOBJDUMP")
    if named:
        return named
    found = shutil.which("cuobjdump")
    if found:
        return found
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    beside = os.path.join(os.path.dirname(nvcc), "cuobjdump")
    return beside if os.access(beside, os.X_OK) else None


def demangle(names):
    if not names:
        return {}
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                             text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}
    # The kernel's name and template arguments: no return type, no parameters.
    short = [re.sub(r"^void ", "", o).split("(")[0].replace(" ", "") for o in out]
    return {n: short[i] for i, n in enumerate(names)}


def load_bytes(opcode):
    """Bytes one global load or store of this opcode moves per thread."""
    parts = opcode.split(".")
    for width, size in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if width in parts:
            return size
    return 4


def parse_sass(text):
    """{mangled name: [(address, opcode, operands)]} in address order."""
    functions, current = {}, None
    for line in text.splitlines():
        if "Function :" in line:
            current = line.split("Function :", 1)[1].strip()
            functions[current] = []
            continue
        m = INSTRUCTION.search(line)
        if m and current is not None:
            functions[current].append((int(m.group(1), 16), m.group(3), m.group(4)))
    return functions


def parse_resources(text):
    """{mangled name: (registers, stack bytes)}."""
    resources, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+)", line)
        if m and current:
            resources[current] = (int(m.group(1)), int(m.group(2)))
    return resources


def loops_of(code):
    """Each loop as (first index, last index): a branch back to an earlier
    address closes the range from its target to itself."""
    index = {address: i for i, (address, _, _) in enumerate(code)}
    loops = set()
    for i, (address, opcode, operands) in enumerate(code):
        if opcode.split(".")[0] != "BRA":
            continue
        m = BRANCH_TARGET.search(operands)
        if m and int(m.group(1), 16) <= address and int(m.group(1), 16) in index:
            loops.add((index[int(m.group(1), 16)], i))
    return sorted(loops)


def classify(code, first, last):
    body = code[first:last + 1]
    loads = sum(load_bytes(op) for _, op, _ in body if op.split(".")[0] in GLOBAL_LOADS)
    stores = any(op.split(".")[0] in GLOBAL_STORES for _, op, _ in body)
    adds = any(op.split(".")[0] in ("FADD", "FFMA") for _, op, _ in body)
    calls = sum(1 for _, op, _ in body if op.startswith("CALL"))
    local = sum(1 for _, op, _ in body if op.startswith(("STL", "LDL")))
    word = max([load_bytes(op) for _, op, _ in body if op.split(".")[0] in GLOBAL_LOADS] or [0])
    if loads and adds:
        kind = "sum"
    elif loads and stores:
        kind = "copy"
    else:
        kind = None
    return kind, word, len(body), loads, calls, local


def steady_loops(code):
    """{(kind, word bytes): [(instructions per 16 B, calls, first address,
    local-memory instructions)]}
    over the innermost loops of each kind (none of the same kind inside
    them); a loop's word is its widest load."""
    found = []
    for first, last in loops_of(code):
        kind, word, size, loads, calls, local = classify(code, first, last)
        if kind:
            found.append((first, last, kind, word, size, loads, calls, local))
    result = {}
    for first, last, kind, word, size, loads, calls, local in found:
        inner = any(f >= first and l <= last and (f, l) != (first, last) and k == kind
                    for f, l, k, _, _, _, _, _ in found)
        if not inner:
            result.setdefault((kind, word), []).append((size * 16.0 / loads, calls,
                                                        code[first][0], local))
    return result


def report(objects, cuobjdump, arch):
    kernels = []
    for obj in objects:
        # One architecture's code: the objects may hold several, each with
        # its own SASS under the same names.
        sass = subprocess.run([cuobjdump, "-arch", arch, "-sass", obj], capture_output=True,
                              text=True, check=True).stdout
        usage = subprocess.run([cuobjdump, "-arch", arch, "-res-usage", obj],
                               capture_output=True, text=True, check=True).stdout
        functions, resources = parse_sass(sass), parse_resources(usage)
        names = demangle(list(functions))
        for mangled, code in functions.items():
            registers, stack = resources.get(mangled, (0, 0))
            local = sum(1 for _, op, _ in code if op.startswith(("STL", "LDL")))
            calls = sum(1 for _, op, _ in code if op.startswith("CALL"))
            kernels.append({"object": os.path.basename(obj), "name": names[mangled],
                            "registers": registers, "stack": stack, "local": local,
                            "instructions": len(code), "calls": calls,
                            "loops": steady_loops(code)})
    return kernels


def print_report(kernels):
    print("%-40s %4s %5s %5s %6s %5s  %s" % ("kernel", "reg", "stack", "local", "instr",
                                              "calls", "steady loops: kind/word bytes xcount, instr/16B (most calls)"))
    for k in kernels:
        loops = []
        for (kind, word), found in sorted(k["loops"].items(), key=lambda i: (i[0][0], -i[0][1])):
            per16 = [p for p, _, _, _ in found]
            loops.append("%s/%d x%d %.1f-%.1f (%d)" % (kind, word, len(found), min(per16),
                                                       max(per16), max(c for _, c, _, _ in found)))
        print("%-40s %4d %5d %5d %6d %5d  %s" % (k["name"], k["registers"], k["stack"],
                                                 k["local"], k["instructions"], k["calls"],
                                                 ", ".join(loops) or "-"))


def check_bounds(kernels, path):
    by_name = {k["name"]: k for k in kernels}
    failures = 0
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            name, kind = line[0], line[1]
            kernel = by_name.get(name)
            if kind == "frame":
                where = "%s:%d: %s" % (path, number, name)
                max_stack, max_registers = int(line[2]), int(line[3])
                if kernel is None:
                    print("%s: no such kernel in the objects" % where)
                    failures += 1
                elif kernel["stack"] > max_stack or kernel["registers"] > max_registers:
                    print("%s: %d registers and a %d-byte stack, above %d and %d" %
                          (where, kernel["registers"], kernel["stack"], max_registers, max_stack))
                    failures += 1
                continue
            word, bound, max_calls = int(line[2]), float(line[3]), int(line[4])
            where = "%s:%d: %s %s loop of %d-byte words" % (path, number, name, kind, word)
            if kernel is None:
                print("%s: no such kernel in the objects" % where)
                failures += 1
                continue
            loops = kernel["loops"].get((kind, word), [])
            if not loops:
                print("%s: the kernel has no such loop" % where)
                failures += 1
            for per16, calls, address, local in loops:
                if per16 > bound:
                    print("%s at 0x%x: %.1f instructions per 16 B, above the bound %.1f" %
                          (where, address, per16, bound))
                    failures += 1
                if calls > max_calls:
                    print("%s at 0x%x: %d subroutine calls (64-bit divisions), at most %d" %
                          (where, address, calls, max_calls))
                    failures += 1
                if local > 0:
                    print("%s at 0x%x: %d local-memory accesses (spills or a stack array)" %
                          (where, address, local))
                    failures += 1
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("objects", nargs="+", help="nvcc objects (kernels/*.cu compiled)")
    parser.add_argument("--bounds", help="check against this file's bounds")
    parser.add_argument("--arch", default="sm_90", help="the architecture read [sm_90]")
    args = parser.parse_args()
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        print("cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, "
              "then put its bin directory on PATH): skipped")
        return 77
    kernels = report(args.objects, cuobjdump, args.arch)
    if not kernels:
        print("no %s code in the objects (the bounds are for it): skipped" % args.arch)
        return 77
    print_report(kernels)
    if args.bounds:
        failures = check_bounds(kernels, args.bounds)
        print("%d bound(s) broken" % failures)
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
