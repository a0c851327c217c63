"""The one exception type that means "the user asked for something we cannot do"."""


class UserInputError(ValueError):
    """Bad input from a person: a wrong name, a missing file, malformed data.

    The command line prints its message as one line and exits with status 2, with no
    traceback. It subclasses ``ValueError`` so library callers can catch it as one.
    """


class AdviceWarning(UserWarning):
    """A warning that ends with advice for Python callers (an argument of a function to change).

    ``str(warning)`` is ``"message; advice"``; ``warning.brief`` is the message alone, which the
    command line prints (its options are not the function's arguments).
    """

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(f"{message}; {advice}" if advice else message)
        self.brief = message
