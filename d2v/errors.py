"""Named errors: part of d2v's interface.

Every error a user can cause is a `D2VError` with a message that says what is wrong
and what to do. The HTTP edge maps `status_code` to the response; the CLI prints
`str(err)` on one line and exits non-zero. Anything else is a bug.
"""

import re


class D2VError(Exception):
    """Base of every error a user can act on."""

    status_code = 400


class InvalidRequestError(D2VError, ValueError):
    """A render request field is missing, out of range or malformed."""

    status_code = 422


class InvalidPathError(InvalidRequestError):
    """The drawn path cannot be used (too few points, NaN, too many points...)."""


class UnknownEffectError(InvalidRequestError):
    """The effect name is not one d2v knows."""


class DepthMapMismatchError(InvalidRequestError):
    """The depth map cannot be the photo's: it is turned a quarter against the photo."""


class InvalidImageError(D2VError, ValueError):
    """The upload is not an image d2v can decode."""

    status_code = 415


class ImageTooLargeError(D2VError, ValueError):
    """The image has more pixels (or bytes) than the configured limit."""

    status_code = 413


class ModelNotConfiguredError(D2VError):
    """A backend needs model weights that are not configured."""

    status_code = 422


class DepthModelError(ModelNotConfiguredError):
    """The depth model (D2V_DEPTH_MODEL) is missing, fails to load, or fails on an image."""


class SegmentModelError(ModelNotConfiguredError):
    """The segmentation model (D2V_SEGMENT_MODEL) is missing, fails to load, or fails on an image."""


class JobNotFoundError(D2VError, KeyError):
    """No job with this id exists."""

    status_code = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "job not found"


class ObjectNotFoundError(D2VError, KeyError):
    """No object with this key exists in the store."""

    status_code = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not found"


class InvalidVideoError(D2VError, ValueError):
    """An input video cannot be decoded."""

    status_code = 415


class StoreUnavailableError(D2VError):
    """The object store cannot be reached or refused our credentials."""

    status_code = 503


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def one_line(e: BaseException) -> str:
    """'TypeName: first line of the message', for errors from code that is not ours
    (torch, Ray, a loader) quoted inside one of our one-line messages. Terminal colour codes
    (Ray colours its tracebacks) are taken out: the text ends up in JSON and on web pages."""
    text = _ANSI.sub("", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


class JobBusyError(D2VError):
    """The job is being run by another live owner (another `d2v render` of the same job)."""

    status_code = 409


class QueueUnavailableError(StoreUnavailableError):
    """The job queue (Redis) does not answer: nothing was queued; retry shortly."""


def user_error(exc: BaseException) -> D2VError | None:
    """The D2VError inside an exception that crossed processes (Ray wraps a stage's error in
    its own, keeping ours as `cause`), if that is what it was."""
    seen = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(seen, D2VError) and not isinstance(cause, D2VError):
            return seen
        seen = cause or seen.__cause__
    return None


class InvalidLookError(InvalidRequestError):
    """The look is not one d2v knows, or its .cube LUT file is malformed or missing."""


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM: `kill`, a container or service manager): handled
    as Ctrl-C is, so a job in hand is failed with this reason and no half-written file stays."""
