"""Why a download did not produce the whole file. Messages are meant for the user as they are, and never carry
credentials (URLs in them are redacted by whoever formats them)."""

from __future__ import annotations


class DownloadError(RuntimeError):
    """The download did not produce the whole file (what is there stays in the partial file, unless said)."""


class Unreachable(DownloadError):
    """No HTTP answer at all: the name does not resolve, the port is closed, or nothing answers in time."""


class TransientStatus(DownloadError):
    """A status that says 'try again soon' (429, 5xx)."""


class Interrupted(DownloadError):
    """The transfer stopped before the end (connection cut, read timeout, short body)."""

    def __init__(self, message: str, received: int):
        super().__init__(message)
        self.received = received  # bytes this attempt brought


class TooLarge(DownloadError):
    """The file is (or claims to be) larger than the size limit; its partial file is deleted, never resumed."""


class FetchDeadlineExceeded(DownloadError):
    """The whole fetch took longer than its total deadline (what arrived stays, for the next call to resume)."""


class UnwantedEncoding(DownloadError):
    """The server compressed the body although only `identity` was asked for: its bytes are not the file's."""


class HashMismatch(DownloadError):
    """A file whose sha256 is not the expected one."""

    def __init__(self, source: str, expected: str, actual: str, deleted: bool):
        what = "it was deleted" if deleted else "it was left as it is"
        super().__init__(f"{source} failed verification: expected sha256 {expected}"
                         f"{'' if len(expected) == 64 else '...'}, got {actual}; {what}")
        self.expected, self.actual = expected, actual
