"""The one lazy loader of the package: a shared library (libulysses, NCCL) is
loaded on first use, once per process, from the first place that works."""

import threading


class Lazy:
    """lazy() returns load()'s value, calling load only the first time (under a
    lock, so that two threads never load twice); lazy.loaded says whether it has
    been called."""

    def __init__(self, load):
        self._load = load
        self._lock = threading.Lock()
        self._value = None

    def __call__(self):
        with self._lock:
            if self._value is None:
                self._value = self._load()
            return self._value

    @property
    def loaded(self):
        return self._value is not None


def first_that_loads(candidates, open_one):
    """(value, failures): open_one(path) of the first (where, path) candidate for
    which it raises no OSError, and a line per candidate that failed before it;
    value is None where every one failed."""
    failures = []
    for where, path in candidates:
        try:
            return open_one(path), failures
        except OSError as error:
            failures.append("  %s (%s): %s" % (path, where, error))
    return None, failures
