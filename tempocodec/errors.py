"""The one exception type users see: its message is a single line that names the file and the fault."""


class TempocodecError(ValueError):
    """A user-facing failure: bad input, missing model, corrupt store.

    The command line prints ``str(error)`` on one line and exits with status 2; library
    callers catch it like any exception. Messages name the file or object and what is wrong.
    A ``ValueError``, like zarr's and numcodecs' own errors for bad configurations or data, so callers that
    catch those catch this too (and code here that wraps ``ValueError`` lets this one through unchanged).
    """
