"""The one exception type that means "the user asked for something we cannot do"."""


class UserInputError(ValueError):
    """Bad input from a person: a wrong name, a missing file, malformed data.

    The command line prints its message as one line and exits with status 2, with no
    traceback. It subclasses ``ValueError`` so library callers can catch it as one.
    """
