"""The one place that hides credentials before anything is shown to a person or a peer.

A Redis URL such as ``redis://:s3cret@cache:6379/0``, an object-store URI with a signed
query (``https://acct.blob.core.windows.net/c?sig=...``) or ``storage_options`` holding
cloud keys are needed to *connect*, but must never reach an HTTP body, a log line, a
startup message, a ``repr``, a lineage record, an OpenLineage event or an exception
message. Everything that shows a location passes it through this module first:

- :func:`redact_url`: a URL's password (or a lone userinfo, often a token) becomes ``***``,
  and so does the value of every query parameter whose name looks secret (``password``,
  ``token``, ``secret``, ``key``, ``sig``, ...). Host, port, path and harmless parameters
  stay, so the redacted form still says *where*.
- :func:`redact`: the same for every URL inside free text (an error message, say), plus
  ``name=value`` pairs with a secret-looking name; ``known`` secrets (a password the
  caller holds) are masked wherever they appear, even outside a URL.
- :func:`redact_options`: ``storage_options`` with every value masked except a few that
  are known to be harmless (region, endpoint host, flags).

Redaction is for display only: connections keep the original string.

Example:
    >>> redact_url("redis://:s3cret@127.0.0.1:6379/0?prefix=fk")
    'redis://:***@127.0.0.1:6379/0?prefix=fk'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import SplitResult, urlsplit

__all__ = ["MASK", "MIN_KNOWN_SECRET", "redact", "redact_options", "redact_url"]

#: What a hidden value is replaced with.
MASK = "***"

# a name is secret when it ends in one of these words: aws_secret_access_key, api_key,
# AccountKey, X-Amz-Signature, sig, access_token, password (but not "keys" or "signed")
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|key|sig(nature)?|credentials?|auth)\Z",
    re.IGNORECASE,
)
#: Known secrets shorter than this are not masked inside free text (they would mangle it).
MIN_KNOWN_SECRET = 4
# scheme://anything-up-to-whitespace-or-quote: URLs inside free text
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# name=value / name: value pairs outside URLs whose name looks secret
_PAIR_IN_TEXT = re.compile(
    r"(?P<name>\b[A-Za-z_][A-Za-z0-9_\-]*)(?P<sep>\s*[=:]\s*)(?P<value>[^\s'\",;&)}\]]+)"
)
_HARMLESS_OPTIONS = frozenset(
    {
        "region",
        "aws_region",
        "aws_default_region",
        "allow_http",
        "aws_allow_http",
        "endpoint",
        "endpoint_url",
        "aws_endpoint",
        "aws_endpoint_url",
        "timeout",
        "conditional_put",
        "aws_conditional_put",
        "virtual_hosted_style_request",
        "aws_virtual_hosted_style_request",
        "use_emulator",
        "azure_storage_use_emulator",
        "account_name",
        "azure_storage_account_name",
    }
)


def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with its password, a lone userinfo and secret query values masked.

    Strings that are not URLs (plain paths) come back unchanged.

    Example:
        >>> redact_url("s3://bucket/t?token=abc&region=eu")
        's3://bucket/t?token=***&region=eu'
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = _redact_netloc(parts)
    except ValueError:  # unparseable (e.g. a bad port): mask everything after the scheme
        scheme = url.split("://", 1)[0]
        return f"{scheme}://{MASK}"
    query = _redact_query(parts.query)
    # rebuilt by hand: urlunsplit drops the "//" of an empty netloc (unix:///tmp/redis.sock)
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if query or url.rstrip("#").endswith("?"):
        out += f"?{query}"
    return out + (f"#{parts.fragment}" if parts.fragment else "")


def _redact_netloc(parts: SplitResult) -> str:
    netloc = parts.netloc
    if "@" not in netloc:
        return netloc
    userinfo, _, host = netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if colon:  # user:password -> keep the user, hide the password
        return f"{user}:{MASK}@{host}"
    return f"{MASK}@{host}"  # a lone userinfo is as often a token as a user name


def _redact_query(query: str) -> str:
    if not query:
        return query
    out = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        out.append(f"{name}={MASK}" if eq and _is_secret_name(name) else pair)
    return "&".join(out)


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with credentials hidden: in URLs, in ``secret=value`` pairs, and ``known``.

    Use it on anything built from a location or from another library's error message
    before it is shown (HTTP bodies, logs, exception messages).

    Example:
        >>> redact("redis://u:hunter2@h:6379/0 said: hunter2 (password=x)", known=["hunter2"])
        'redis://u:***@h:6379/0 said: *** (password=***)'
    """
    out = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    out = _PAIR_IN_TEXT.sub(_mask_pair, out)
    for secret in sorted({s for s in known if len(s) >= MIN_KNOWN_SECRET}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def _mask_pair(match: re.Match[str]) -> str:
    if not _is_secret_name(match.group("name")) or match.group("value") == MASK:
        return match.group(0)
    if "://" in match.group("value") or match.group("value").startswith("//"):
        return match.group(0)  # a URL after "key:" is redacted as a URL already
    return f"{match.group('name')}{match.group('sep')}{MASK}"


def redact_options(options: Mapping[str, str]) -> dict[str, str]:
    """``storage_options`` for display: every value masked except known harmless ones.

    Example:
        >>> redact_options({"aws_secret_access_key": "abc", "region": "eu-west-1"})
        {'aws_secret_access_key': '***', 'region': 'eu-west-1'}
    """
    return {
        name: redact_url(str(value)) if name.lower() in _HARMLESS_OPTIONS else MASK
        for name, value in options.items()
    }
