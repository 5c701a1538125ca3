"""The one exception type that means "the user must change something".

The CLI prints its message as one line and exits with code 2; anything else is an internal failure
(exit 1). Library code raises it for bad input (paths, files, fields, hyper-parameters), never for bugs.
"""


class UserError(Exception):
    """Bad input: the message names the input and the problem, in one line."""
