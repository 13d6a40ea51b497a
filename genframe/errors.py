"""The one error type users see: the CLI prints it as a single line instead of a traceback."""


class GenframeError(Exception):
    """A problem the user can fix (bad spec, missing data, unwritable output...)."""


class SpecError(GenframeError):
    """A spec that cannot be accepted; the message names the file and the field path."""

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None):
        self.source = source
        self.path = path
        self.detail = message
        prefix = ": ".join(p for p in (source, path) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)
