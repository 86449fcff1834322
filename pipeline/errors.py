"""The one error type a user should ever see from the pipeline."""


class PipelineError(Exception):
    """A problem with the user's input or setup, stated in one line with its fix.

    The CLI prints it as `error: <message>` and exits with code 1, without a traceback:
    these are not bugs, they are things the user can act on.
    """
