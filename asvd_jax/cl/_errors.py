"""The trainer's error type (its own module so every trainer module can raise it)."""


class RunError(RuntimeError):
    """A run cannot continue (non-finite loss, mismatched resume); the message says why."""
