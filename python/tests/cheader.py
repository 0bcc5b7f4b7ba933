"""A small reader of include/ulysses.h for the drift tests: its enums, structs,
numeric macros and function prototypes, as the C compiler would see them
(comments removed). No C compiler is run."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.environ.get("ULYSSES_HEADER") or os.path.normpath(
    os.path.join(HERE, "..", "..", "include", "ulysses.h"))


def text():
    with open(HEADER) as header:
        source = header.read()
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    return re.sub(r"//[^\n]*", " ", source)


def enums():
    """{typedef name: [(enumerator, value)]}, values as written (all explicit)."""
    found = {}
    for body, name in re.findall(r"typedef\s+enum\s*\{(.*?)\}\s*(\w+)\s*;", text(), re.S):
        entries = []
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            enumerator, value = [part.strip() for part in item.split("=")]
            entries.append((enumerator, int(value, 0)))
        found[name] = entries
    return found


def structs():
    """{typedef name: [(C type, field)]} of the header's typedef'd structs."""
    found = {}
    for body, name in re.findall(r"typedef\s+struct\s*\{(.*?)\}\s*(\w+)\s*;", text(), re.S):
        fields = []
        for declaration in body.split(";"):
            declaration = " ".join(declaration.split())
            if declaration:
                ctype, field = declaration.rsplit(" ", 1)
                fields.append((ctype, field))
        found[name] = fields
    return found


def defines():
    """{name: replacement text} of the object-like macros."""
    found = {}
    for name, value in re.findall(r"^[ \t]*#define[ \t]+(\w+)(?![\w(])[ \t]*(.*?)[ \t]*$",
                                  text(), re.M):
        found[name] = value
    return found


def evaluate(expression, known):
    """The integer value of a numeric macro's replacement text."""
    expression = re.sub(r"\(\s*u?int\d+_t\s*\)", "", expression)  # casts
    expression = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expression)
    limits = {"INT32_MAX": 2**31 - 1, "INT_MIN": -(2**31), "INT_MAX": 2**31 - 1}
    for name, value in sorted(list(limits.items()) + list(known.items()), key=lambda kv: -len(kv[0])):
        expression = re.sub(r"\b%s\b" % name, "(%d)" % value, expression)
    if not re.fullmatch(r"[0-9a-fA-Fx()+\-* ]+", expression):
        raise ValueError("cannot evaluate %r" % expression)
    return eval(expression, {"__builtins__": {}})


def functions():
    """[(name, return C type, [(C type, parameter)])] of every ULYSSES_API function."""
    found = []
    pattern = r"ULYSSES_API\s+([\w\s\*]+?)\s*\b(\w+)\s*\(([^)]*)\)\s*;"
    for returns, name, params in re.findall(pattern, text(), re.S):
        parameters = []
        params = " ".join(params.split())
        if params and params != "void":
            for param in params.split(","):
                param = param.strip()
                match = re.fullmatch(r"(.*?)\s*\b(\w+)", param)
                ctype = re.sub(r"\s*\*\s*", "* ", match.group(1)).strip()
                parameters.append((ctype, match.group(2)))
        found.append((name, re.sub(r"\s*\*\s*", "* ", returns).strip(), parameters))
    return found


def camel_to_upper_snake(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()
