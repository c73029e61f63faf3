"""The one exception type for bad input: its message names the file, row or config key."""


class InputError(Exception):
    """Bad input (config key, file, CSV row, image). Shown to the user as one line, no traceback."""


class DiskFullError(InputError, OSError):
    """A write failed because the disk (or the quota) is full: not bad input, but shown the same way,
    one line naming the path and the free space, with the job's outputs removed. An ``OSError`` too
    (``errno`` ENOSPC or EDQUOT), so code that tolerates a failed optional write still does."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


def damaged(path: object, detail: str) -> InputError:
    """The one line for an intermediate file that is not what its producer wrote (truncated, overwritten,
    unreadable): the file, what is wrong, and the command that rebuilds it (its dependants rerun too)."""
    return InputError(
        f"{path} is damaged ({detail}): rebuild it with `snakemake --forcerun {path}` and your usual options "
        "(--configfile ...; what depends on it reruns too), or delete it and run again"
    )
