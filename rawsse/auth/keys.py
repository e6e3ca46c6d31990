"""The keys that may have signed a token, and the one algorithm each is good for.

A key never takes its algorithm from the token: an HS256 secret verifies HS256 only, an
RSA public key RS256 only, an EC P-256 key ES256 only. So `alg: none` is refused (no key
is for it), and a token signed with HMAC using the RSA public key as the "secret" (key
confusion, RFC 8725 2.1) is refused too: no HMAC key is an RSA key.

The files are read when the server starts and again on SIGHUP (`reload`), so keys rotate
without a restart; a reload that fails keeps the keys in force and says why.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from rawsse.auth.tokens import Key, UnknownKeyId
from rawsse.errors import ConfigError

MIN_SECRET_BYTES = 32
"""An HS256 secret at least as long as its hash (RFC 7518 3.2)."""

MAX_KEY_FILE_BYTES = 1024 * 1024

MAX_HEADER_SEGMENT = 2048
"""A token's header names an algorithm, a type and a key id: a few dozen bytes."""


@dataclass(frozen=True)
class KeySources:
    """Where the keys come from (the options): any mix of an HS256 secret, a PEM public
    key file and a JWKS file."""

    secret: str | None = None
    secret_file: str | None = None
    key_file: str | None = None
    jwks_file: str | None = None

    @property
    def configured(self) -> bool:
        return any((self.secret, self.secret_file, self.key_file, self.jwks_file))


class KeyRing:
    """The keys in force, read from their files (the I/O side of rawsse.auth.tokens)."""

    def __init__(self, sources: KeySources, keys: tuple[Key, ...] | None = None) -> None:
        """`keys` as `load_keys(sources)` read them at start (the preflight's), or read now."""
        self.sources = sources
        self.keys: tuple[Key, ...] = load_keys(sources) if keys is None else keys

    def reload(self) -> None:
        """Read the files again; raises ConfigError (the keys in force stay) if one is
        missing or unusable."""
        self.keys = load_keys(self.sources)

    def candidates(self, token: str) -> list[Key]:
        """The keys that may verify `token`: those of the algorithm its header names.
        A token that names a `kid` is verified by the key of that id and by the keys that
        have no id (a secret, a PEM file), and refused (UnknownKeyId) when there are none:
        a key removed from a JWKS file (rotated out, revoked) verifies nothing once the
        file is read again. Raises jwt.DecodeError for a `kid` that is not a string (RFC
        7515 4.1.4)."""
        header = token_header(token)
        algorithm = header.get("alg")
        keys = [key for key in self.keys if key.algorithm == algorithm]
        if "kid" not in header:
            return keys
        kid = header["kid"]
        if not isinstance(kid, str):
            raise jwt.DecodeError("kid must be a string")
        chosen = [key for key in keys if key.kid is None or key.kid == kid]
        if not chosen and keys:
            raise UnknownKeyId(kid)
        return chosen


def token_header(token: str) -> dict[str, Any]:
    """A token's header, read only to pick its key (PyJWT's own reader decodes the whole
    token, which the verification does again: this costs a tenth of it). Raises
    jwt.DecodeError for anything that is not one."""
    segment = token.partition(".")[0]
    if len(segment) > MAX_HEADER_SEGMENT:
        raise jwt.DecodeError("not a token header")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
        raise jwt.DecodeError("not a token header") from None
    if not isinstance(header, dict):
        raise jwt.DecodeError("not a token header")
    return header


def check_secret(secret: str, option: str) -> None:
    """Raise ConfigError (named by `option`) for an HMAC secret too short to be one."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(option, f"must be at least {MIN_SECRET_BYTES} bytes long")


def load_keys(sources: KeySources) -> tuple[Key, ...]:
    keys: list[Key] = []
    secret, option = sources.secret, "jwt_secret"
    if sources.secret_file:
        secret, option = _read(sources.secret_file, "jwt_secret_file").strip(), "jwt_secret_file"
    if secret:
        check_secret(secret, option)
        keys.append(Key(secret.encode(), "HS256"))
    if sources.key_file:
        keys.append(_pem_key(_read(sources.key_file, "jwt_key_file")))
    if sources.jwks_file:
        keys.extend(_jwks(_read(sources.jwks_file, "jwt_jwks_file")))
    return tuple(keys)


def _read(path: str, option: str) -> str:
    try:
        if os.path.getsize(path) > MAX_KEY_FILE_BYTES:
            raise ConfigError(option, f"is larger than {MAX_KEY_FILE_BYTES} bytes: {path}")
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(option, f"cannot be read: {path}: {getattr(exc, 'strerror', exc)}") from None


def _pem_key(text: str) -> Key:
    try:
        public = load_pem_public_key(text.encode())
    except ValueError:
        raise ConfigError("jwt_key_file", "holds no PEM public key") from None
    return Key(public, _algorithm_of(public, "jwt_key_file"))


def _algorithm_of(public: object, option: str) -> str:
    """The one algorithm a public key verifies; ConfigError for a key too weak or of
    another kind (the same rules for a PEM file and for every key of a JWKS file)."""
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ConfigError(option, "RSA keys must have at least 2048 bits")
        return "RS256"
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return "ES256"
    raise ConfigError(option, "must hold RSA (RS256) or P-256 EC (ES256) public keys")


_JWK_ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}


def _jwks(text: str) -> list[Key]:
    try:
        entries = json.loads(text).get("keys")
    except (ValueError, AttributeError):
        entries = None
    if not isinstance(entries, list) or not entries:
        raise ConfigError("jwt_jwks_file", 'must be a JSON object with a non-empty "keys" list')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue  # an encryption key, say: not for us
        algorithm = entry.get("alg") or _JWK_ALGORITHMS.get(entry.get("kty", ""))
        if "d" in entry:  # a private key: it has no business on this server
            raise ConfigError("jwt_jwks_file", "must hold public keys only (a key has a private part)")
        if algorithm not in ("RS256", "ES256") or entry.get("kty") == "oct":
            raise ConfigError("jwt_jwks_file", "keys must be RSA (RS256) or P-256 EC (ES256) public keys")
        try:
            parsed = jwt.PyJWK.from_dict(entry, algorithm)
        except (jwt.PyJWTError, ValueError, KeyError):
            raise ConfigError(
                "jwt_jwks_file", f"holds a key that cannot be read: {entry.get('kid')!r}"
            ) from None
        if _algorithm_of(parsed.key, "jwt_jwks_file") != algorithm:
            raise ConfigError("jwt_jwks_file", f"key {entry.get('kid')!r} is not a key for {algorithm}")
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):  # no token could name it (RFC 7517 4.5)
            raise ConfigError("jwt_jwks_file", f"key ids must be strings, got {kid!r}")
        keys.append(Key(parsed.key, algorithm, kid))
    if not keys:
        raise ConfigError("jwt_jwks_file", "holds no signing key")
    return keys
