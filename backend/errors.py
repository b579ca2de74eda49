"""The one exception family of the backend. Messages say what was wrong and what to do."""


class LWError(Exception):
    """Base class: an error the user can act on. Caught at the boundary (job, CLI) and shown as is."""


class InvalidInput(LWError):
    """A file, parameter or request the user gave is wrong (bad PLY, missing dataset file, bad camera)."""


class NotFound(LWError):
    """Something named by the user does not exist (job id, artifact, world, model weights)."""


class JobCancelled(LWError):
    """Raised inside a job when its cancellation was requested; the job ends in state ``cancelled``."""


class ModelUnavailable(LWError):
    """Real model weights are not present locally; the caller may fall back to the built-in provider."""


def one_line(text: str) -> str:
    """``text`` with its line breaks shown as ``\\n``: a path or value a user gave may hold one, and an error message
    stays one line wherever it is shown."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
