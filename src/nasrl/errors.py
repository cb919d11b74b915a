"""Errors caused by the user's input. The CLI prints them as one line and exits 2."""


class NasrlError(ValueError):
    """Bad input: an argument, a config value, a data file, a run directory.

    The message names the offending thing and is meant to be shown as is.
    """
