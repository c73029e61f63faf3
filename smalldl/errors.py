"""The one exception type for bad input: its message names the file, row or config key."""


class InputError(Exception):
    """Bad input (config key, file, CSV row, image). Shown to the user as one line, no traceback."""
