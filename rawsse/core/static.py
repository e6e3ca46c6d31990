"""The dashboard's files, answered from memory: an allow-list of the files shipped in
`rawsse/dashboard/static/`, read once at startup (rawsse.dashboard.files) and handed in
here. No I/O per request, no path from the URL ever reaches the file system."""

from __future__ import annotations

import hashlib

from rawsse.core.http import Request, response
from rawsse.errors import HttpError

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The shipped files, and all that is ever served: anything else under /static/ is 404."""

PAGE = "index.html"
STATIC_PREFIX = "/static/"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Same origin only, no inline script or style: the page needs nothing else, and an
injected `<script>` could do nothing."""

HEADERS = (
    ("Cache-Control", "no-cache"),  # revalidate with the ETag: small files, new on upgrade
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def is_static_path(path: str) -> bool:
    return path == "/" or path.startswith(STATIC_PREFIX)


class StaticFiles:
    def __init__(self, files: dict[str, bytes]) -> None:
        self._files: dict[str, tuple[bytes, str, str]] = {}
        for name, body in files.items():
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            path = "/" if name == PAGE else STATIC_PREFIX + name
            self._files[path] = (body, CONTENT_TYPES[name], etag)

    def answer(self, request: Request) -> bytes:
        found = self._files.get(request.path)
        if found is None:
            raise HttpError(404, f"no such file: {request.path[:100]}")
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, "use GET or HEAD", [("Allow", "GET, HEAD")])
        body, content_type, etag = found
        headers = (("ETag", etag), *HEADERS)
        if etag in request.headers.get("if-none-match", ""):
            return response(304, headers=headers, keep_alive=request.keep_alive)
        whole = response(200, body, content_type, headers, keep_alive=request.keep_alive)
        # HEAD: the same head, with the Content-Length of the body it does not carry
        return whole[: len(whole) - len(body)] if request.method == "HEAD" else whole
