"""Credentials out of everything `fetch` prints: a mirror URL may carry `user:password@` or a signed query.

`redact_url` is for URLs the code formats itself; `Redactor` scrubs the same secrets out of any text, since a
library's exception message (requests quotes URLs and queries) can carry them where no URL is formatted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose value is a credential: AWS/GCS/Azure signatures, tokens, keys, passwords.
SECRET_PARAM = re.compile(r"token|key|secret|sig|signature|password|passwd|pwd|auth|credential|session|sas|code",
                          re.IGNORECASE)
MIN_SECRET_CHARS = 3  # shorter values would mask innocent text everywhere


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # an invalid IPv6 literal, say: nothing we can take apart
        return None


def redact_url(url: str) -> str:
    """The URL with its userinfo and secret-looking query values replaced by ***; anything else as it is."""
    parts = _split(url)
    if parts is None:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> set[str]:
    """The secret strings a URL carries (user, password, secret query values), raw and percent-decoded."""
    parts = _split(url)
    if parts is None:
        return set()
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.update({userinfo, *userinfo.split(":", 1)})
    for chunk in parts.query.split("&"):
        name, _, value = chunk.partition("=")
        if SECRET_PARAM.search(unquote(name)):
            found.add(value)
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if len(secret) >= MIN_SECRET_CHARS}


class Redactor:
    """Scrubs the secrets of some URLs out of any text (longest first, so a password inside user:password goes
    with the pair)."""

    def __init__(self, urls: Iterable[str | None]) -> None:
        secrets: set[str] = set()
        for url in urls:
            if url:
                secrets |= url_secrets(url)
        self.secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text
