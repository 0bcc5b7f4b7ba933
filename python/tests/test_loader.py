"""Finding and loading libulysses: the environment variable, next to the package,
the loader's search path, clear errors when it is missing or the wrong version,
and that importing the package loads neither the library nor torch."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

import ulysses
from ulysses import _lib, _loader, _nccl

PACKAGE_DIR = os.path.dirname(os.path.abspath(ulysses.__file__))


def built_library():
    """The library under test: ULYSSES_LIBRARY as the test runner set it."""
    path = os.environ.get(_lib.ENV_VAR)
    if not path:
        raise unittest.SkipTest("ULYSSES_LIBRARY is not set: the loader tests need the built library")
    return os.path.realpath(path)


def run_python(code, env, pythonpath):
    """Runs code in a fresh interpreter with exactly env (plus PYTHONPATH)."""
    env = dict(env, PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)


def bare_environment():
    """This environment without the variables that steer the loaders."""
    env = {k: v for k, v in os.environ.items()
           if k not in (_lib.ENV_VAR, "LD_LIBRARY_PATH", "PYTHONPATH")}
    return env


class LazyTest(unittest.TestCase):
    def test_loads_once_on_first_use(self):
        calls = []
        lazy = _loader.Lazy(lambda: calls.append("load") or len(calls))
        self.assertFalse(lazy.loaded)
        self.assertEqual((lazy(), lazy()), (1, 1))
        self.assertTrue(lazy.loaded)
        self.assertEqual(calls, ["load"])

    def test_the_first_candidate_that_loads_and_why_the_others_did_not(self):
        def open_one(path):
            if path != "good":
                raise OSError("cannot open %s" % path)
            return "opened " + path
        self.assertEqual(_loader.first_that_loads([("first", "bad"), ("second", "good")], open_one),
                         ("opened good", ["  bad (first): cannot open bad"]))
        self.assertEqual(_loader.first_that_loads([("first", "bad")], open_one),
                         (None, ["  bad (first): cannot open bad"]))

    def test_libulysses_and_nccl_share_the_loader(self):
        self.assertIsInstance(_lib.library, _loader.Lazy)
        self.assertIsInstance(_nccl.library, _loader.Lazy)


class EnvironmentVariableTest(unittest.TestCase):
    def test_loads_the_named_file(self):
        library = _lib.load_library()
        self.assertEqual(os.path.realpath(library.path), built_library())
        self.assertEqual(library.version, (ulysses.MAJOR, ulysses.MINOR, ulysses.PATCH))

    def test_only_the_named_file_is_tried(self):
        self.assertEqual(_lib.candidates(), [("the environment variable ULYSSES_LIBRARY",
                                              os.environ[_lib.ENV_VAR])])

    def test_missing_file_is_a_clear_error(self):
        missing = os.path.join(tempfile.gettempdir(), "no-such-dir", "libulysses.so")
        with mock.patch.dict(os.environ, {_lib.ENV_VAR: missing}):
            with self.assertRaises(ulysses.UlyssesLibraryError) as raised:
                _lib.load_library()
        message = str(raised.exception)
        self.assertIn(missing, message)
        self.assertIn("no such file", message)
        self.assertIn("ULYSSES_LIBRARY", message)

    def test_a_file_that_is_no_library_is_a_clear_error(self):
        with tempfile.NamedTemporaryFile(suffix=".so") as bogus:
            bogus.write(b"not an ELF file")
            bogus.flush()
            with mock.patch.dict(os.environ, {_lib.ENV_VAR: bogus.name}):
                with self.assertRaises(ulysses.UlyssesLibraryError) as raised:
                    _lib.load_library()
        self.assertIn(bogus.name, str(raised.exception))

    def test_explicit_path(self):
        library = _lib.load_library(built_library())
        self.assertEqual(library.version, ulysses.version())


class SearchOrderTest(unittest.TestCase):
    """In fresh interpreters, so that the loader's state and search path are their own."""

    def setUp(self):
        self.library = built_library()
        self.scratch = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.scratch)
        self.package = os.path.join(self.scratch, "ulysses")
        shutil.copytree(PACKAGE_DIR, self.package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so*"))

    def test_next_to_the_package(self):
        os.symlink(self.library, os.path.join(self.package, "libulysses.so.0"))
        result = run_python("""
            import os, ulysses
            print(os.path.dirname(ulysses.library().path) == os.path.dirname(ulysses.__file__))
            print(ulysses.version())
        """, bare_environment(), self.scratch)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n")[0], "True")

    def test_the_loaders_search_path(self):
        folder = os.path.join(self.scratch, "lib")
        os.mkdir(folder)
        os.symlink(self.library, os.path.join(folder, "libulysses.so.0"))
        env = dict(bare_environment(), LD_LIBRARY_PATH=folder)
        result = run_python("""
            import ulysses
            print(ulysses.library().path)
        """, env, self.scratch)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "libulysses.so.0")

    def test_nowhere_is_a_clear_error_naming_every_place_tried(self):
        result = run_python("""
            import ulysses
            try:
                ulysses.library()
            except ulysses.UlyssesLibraryError as error:
                print(error)
            else:
                print("loaded", ulysses.library().path)
        """, bare_environment(), self.scratch)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("libulysses could not be loaded", result.stdout)
        self.assertIn(os.path.join(self.package, "libulysses.so.0"), result.stdout)
        self.assertIn("the loader's search path", result.stdout)
        self.assertIn("ULYSSES_LIBRARY", result.stdout)

    def test_import_loads_neither_the_library_nor_torch(self):
        result = run_python("""
            import sys, ulysses
            from ulysses import _lib
            print(not _lib.library.loaded, "torch" in sys.modules)
            print(ulysses.Layout(1, 2, 3, 4).heads, ulysses.Result.ERROR_NULL_POINTER.value)
        """, bare_environment(), self.scratch)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n")[:2], ["True False", "2 2"])


class VersionTest(unittest.TestCase):
    def test_a_different_major_version_is_refused(self):
        with mock.patch.object(_lib, "PACKAGE_VERSION", (ulysses.MAJOR + 1, 0, 0)):
            with self.assertRaises(ulysses.UlyssesLibraryError) as raised:
                _lib.load_library(built_library())
        message = str(raised.exception)
        self.assertIn("libulysses %d.%d.%d" % (ulysses.MAJOR, ulysses.MINOR, ulysses.PATCH), message)
        self.assertIn("written for libulysses %d.0.0" % (ulysses.MAJOR + 1), message)
        self.assertIn("major versions must match", message)

    def test_the_librarys_reported_version_is_what_is_checked(self):
        with mock.patch.object(_lib, "library_version_code", return_value=ulysses.VERSION_CODE + 10000 + 203):
            with self.assertRaises(ulysses.UlyssesLibraryError) as raised:
                _lib.load_library(built_library())
        self.assertIn("libulysses %d.%d.3" % (ulysses.MAJOR + 1, ulysses.MINOR + 2), str(raised.exception))

    def test_a_newer_minor_version_is_accepted(self):
        with mock.patch.object(_lib, "library_version_code", return_value=ulysses.VERSION_CODE + 100):
            library = _lib.load_library(built_library())
        self.assertEqual(library.version, (ulysses.MAJOR, ulysses.MINOR + 1, ulysses.PATCH))

    def test_a_missing_function_is_named(self):
        prototypes = dict(_lib.PROTOTYPES, ulyssesNoSuchFunction=(None, []))
        with mock.patch.object(_lib, "PROTOTYPES", prototypes):
            with self.assertRaises(ulysses.UlyssesLibraryError) as raised:
                _lib.load_library(built_library())
        self.assertIn("ulyssesNoSuchFunction", str(raised.exception))

    def test_the_loaded_version_is_the_headers(self):
        self.assertEqual(ulysses.get_version(), ulysses.VERSION_CODE)
        self.assertEqual(ulysses.version(), (ulysses.MAJOR, ulysses.MINOR, ulysses.PATCH))


if __name__ == "__main__":
    unittest.main()
