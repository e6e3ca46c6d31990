"""Who may publish, disconnect and count presence: the operator — whoever sends the publish
token, or, without one, a client on this machine's loopback, naming a loopback Host, whose
request no proxy relayed — or a client whose token has `publish` patterns (each topic is
then checked against them). The same rule decides whether a WebSocket may publish."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from rawsse.auth.tokens import Forbidden, Grant
from rawsse.core.access import Access
from rawsse.core.admission import RELAYED, is_loopback_host, relayed
from rawsse.core.http import Request
from rawsse.errors import HttpError


class PublisherRights:
    def __init__(self, publish_token: str | None, access: Access) -> None:
        self._publish_token = publish_token
        self._access = access

    def check(self, request: Request, from_loopback: Callable[[], bool]) -> Grant | None:
        """Who publishes: None for the operator (the publish token, or loopback when none
        is set), who may publish to any topic; or the grant of a client token with
        `publish` patterns. Raises 401 or 403."""
        token = self._publish_token
        access = self._access
        if access.verifier is not None:
            credential = access.credential(request)
            if credential is not None and not (token and _same(credential, token)):
                grant = access.grant(request)
                assert grant is not None
                if not grant.publish:
                    raise Forbidden("the token has no publish rights")
                return grant
        if token is None:
            if not from_loopback():
                raise HttpError(403, "publishing is allowed from loopback only (set a publish token)")
            if not is_loopback_host(request.headers.get("host", "")):
                # A page whose name was re-pointed at 127.0.0.1 (DNS rebinding) is "same
                # origin" to the browser and arrives from loopback; only its Host gives it away.
                raise HttpError(403, "without a publish token, Host must be 127.0.0.1, [::1] or localhost")
            if relayed(request):
                # A proxy on this machine connects from loopback whoever its client is, with
                # a loopback Host too where it names its upstream by address (nginx's
                # default): a request it relayed is not the operator's. The headers are any
                # proxy's mark, trusted or not.
                raise HttpError(403, RELAYED)
            return None
        if not self.holds_token(request):
            raise HttpError(401, "a valid bearer token is required", [("WWW-Authenticate", "Bearer")])
        return None

    def holds_token(self, request: Request) -> bool:
        """Whether the request's bearer credential is the publish token (the operator)."""
        token = self._publish_token
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return token is not None and scheme.lower() == "bearer" and _same(given.strip(), token)

    def may_publish(self, request: Request, from_loopback: Callable[[], bool]) -> bool:
        """Whether a WebSocket may publish to any topic: by the rules of POST /publish,
        at its handshake. A token's `publish` patterns are checked per command instead."""
        try:
            return self.check(request, from_loopback) is None
        except HttpError:
            return False


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())
