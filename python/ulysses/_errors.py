"""The package's two exception classes."""

from ._types import Result


class UlyssesError(RuntimeError):
    """A call of the C library returned something other than ulyssesSuccess.

    code: the ulyssesResult_t (a Result where the value is known);
    name: ulyssesGetErrorString(code), e.g. "ulyssesErrorInvalidArgument";
    message: ulyssesGetLastError() right after the call: which argument and why.
    """

    def __init__(self, code, name, message):
        try:
            code = Result(code)
        except ValueError:
            pass
        self.code = code
        self.name = name
        self.message = message
        super().__init__("%s: %s" % (name, message) if message else name)


class UlyssesLibraryError(ImportError):
    """libulysses could not be loaded, or is not a version this package speaks."""
