"""Secrets shown redacted: URLs with credentials or tokens, and tokens in free text.

Whatever tripwire prints, logs or answers with may hold a URL from the rules file (a
Slack or n8n webhook is a secret in its own path) or an error message quoting one.
`redact_url` keeps what a reader needs to tell URLs apart (scheme, host, the plain path)
and replaces the rest with `***`; `redact_text` does so for every URL and token in text.

    >>> redact_url("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx")
    'https://hooks.slack.com/services/T0…/***'
    >>> redact_url("https://user:pw@example.com/hook?token=abc&page=2")
    'https://***@example.com/hook?token=***&page=2'
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

MASK: Final = "***"

# query parameters whose value is a credential, by a part of their name (api_key, X-Amz-Signature, sig)
_SECRET_PARAM = re.compile(r"token|key|secret|sig|pass|auth|credential|session|code", re.IGNORECASE)
# a path segment that reads as generated: long, with letters and digits (webhook secrets, push tokens, UUIDs)
_GENERATED = re.compile(r"(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_\-.~%+=:]{16,}")
# paths that are a credential from a point on: Slack's /services/T…/B…/SECRET, n8n's /webhook/PATH
_CAPABILITY_PATHS: Final = (
    (re.compile(r"(?i)^hooks\.slack(?:-gov)?\.com$"), re.compile(r"^(/services/)(T[A-Z0-9]?)")),
    (None, re.compile(r"^(.*?/webhook(?:-test|-waiting)?/)()")),
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_TEXT_SECRETS: Final = (
    # Authorization values: Bearer TOKEN, Basic BASE64
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{6,}"), rf"\1\2{MASK}"),
    # Slack tokens (xoxb-…, xoxp-…)
    (re.compile(r"\b(xox[abposr])-[A-Za-z0-9-]+"), rf"\1-{MASK}"),
    # private keys in PEM, also inside JSON with its \n escapes (a service account file)
    (
        re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
        rf"-----BEGIN \1PRIVATE KEY-----{MASK}-----END \1PRIVATE KEY-----",
    ),
    # name=value and "name": "value" pairs where the name says credential
    (
        re.compile(
            r"(?i)(\b[\w-]*(?:password|passwd|secret|token|(?:api|access|write|private)[_-]?key|authorization)[\w-]*"
            r"[\"']?\s*[:=]\s*[\"']?)(?!\*{3}|-----)(?!(?:bearer|basic)\s)([^\s\"',;&}]+)"
        ),
        rf"\1{MASK}",
    ),
)


def redact_url(url: str) -> str:
    """`url` without its credentials: user info, token-like query values, secret path parts, fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a malformed port raises here, before anything is shown
    except ValueError:
        return f"{url.partition('://')[0]}://{MASK}" if "://" in url else MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    fragment = MASK if parts.fragment else ""
    return urlunsplit(SplitResult(parts.scheme, netloc, _path(parts), _query(parts.query), fragment))


def _path(parts: SplitResult) -> str:
    host = parts.hostname or ""
    for host_pattern, path_pattern in _CAPABILITY_PATHS:
        found = path_pattern.match(parts.path) if host_pattern is None or host_pattern.match(host) else None
        if found and len(parts.path) > len(found.group(1)):
            return found.group(1) + (found.group(2) + "…/" if found.group(2) else "") + MASK
    return "/".join(MASK if _GENERATED.fullmatch(segment) else segment for segment in parts.path.split("/"))


def _query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = []
    for name, value in pairs:
        secret = _SECRET_PARAM.search(name) or _GENERATED.fullmatch(value)
        shown.append(f"{quote(name, safe='')}={MASK if secret and value else quote(value, safe='')}")
    return "&".join(shown)


def _redact_found_url(found: re.Match[str]) -> str:
    url = found.group(0)
    end = len(url.rstrip(".,;:!?)]}"))  # punctuation after a URL in prose is not part of it
    return redact_url(url[:end]) + url[end:]


def redact_text(text: str) -> str:
    """`text` with every URL redacted as `redact_url` does, and tokens, keys and passwords masked."""
    text = _URL.sub(_redact_found_url, text)
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text
