"""The one exception type users see: its message is a single line that names the file and the fault."""


class TempocodecError(Exception):
    """A user-facing failure: bad input, missing model, corrupt store.

    The command line prints ``str(error)`` on one line and exits with status 2; library
    callers catch it like any exception. Messages name the file or object and what is wrong.
    """
