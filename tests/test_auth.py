"""Tokens, topic rules, credentials and the ledger of authorized streams, without sockets:
every accept and refuse path of the checks, with a fake clock where time matters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.auth.app import AppUnavailable, grant_from_answer
from rawsse.auth.keys import KeyRing, KeySources
from rawsse.auth.ledger import ExpiryWheel, Ledger, StreamAccess
from rawsse.auth.rules import MAX_PATTERNS, NO_TOPICS, TopicRules, parse_rule_text, parse_rules
from rawsse.auth.tokens import AuthError, Forbidden, Grant, TokenOptions, TokenVerifier
from rawsse.core.access import Access, AccessOptions, owner_of, parse_networks
from rawsse.core.http import Request
from rawsse.core.topics import MAX_TOPIC_LENGTH
from rawsse.errors import ConfigError, RuleError

KIND = "unit"

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def rules_of(patterns: list[str]) -> TopicRules:
    return parse_rules(patterns, MAX_TOPIC_LENGTH)


def rule_text_of(text: str) -> TopicRules:
    return parse_rule_text(text, MAX_TOPIC_LENGTH)


def token(claims: dict[str, object], key: object = SECRET, algorithm: str = "HS256", **headers: str) -> str:
    return jwt.encode({"exp": time.time() + 60, **claims}, key, algorithm=algorithm, headers=headers or None)  # type: ignore[arg-type]


def verifier(options: TokenOptions | None = None, **sources: str) -> TokenVerifier:
    return TokenVerifier(KeyRing(KeySources(**sources)), options or TokenOptions())


def request(query: str = "", **headers: str) -> Request:
    return Request("GET", "/events", query, {k.replace("_", "-"): v for k, v in headers.items()}, b"", True)


# Topic rules


def test_exact_prefix_and_own_sub_patterns() -> None:
    rules = rules_of(["news", "sport:*", "orders:{sub}", "team:{sub}:*"])
    assert rules.allows("news") and not rules.allows("news2") and not rules.allows("new")
    assert rules.allows("sport:") and rules.allows("sport:golf") and not rules.allows("sport")
    assert rules.allows("orders:42", "42") and not rules.allows("orders:43", "42")
    assert not rules.allows("orders:42")  # no sub, no own topics
    assert not rules.allows("orders:", "")
    assert rules.allows("team:42:chat", "42") and not rules.allows("team:43:chat", "42")
    assert rules_of(["*"]).allows("anything:at:all")
    # Users' @ topics: only a wildcard that names an @ reaches them.
    assert not rules_of(["*", "notes*", "team:{sub}:*"]).allows("notes@43", "4")
    assert not rules_of(["team:{sub}:*"]).allows("team:4:x@43", "4")
    assert rules_of(["notes@*"]).allows("notes@43")
    assert not NO_TOPICS.allows("news") and not NO_TOPICS


def test_patterns_are_bounded_and_checked() -> None:
    with pytest.raises(RuleError, match="at most 64"):
        rules_of([f"t{n}" for n in range(MAX_PATTERNS + 1)])
    for bad in ["", "a*b", "**", "{sub}{sub}", "bad name", "a/b", "x" * 300, 5, "notes@{sub}*"]:
        with pytest.raises(RuleError):
            rules_of([bad])
    assert rule_text_of(" a , b:* ,").allows("b:c")


def test_a_pathological_topic_costs_one_pass() -> None:
    # A regular-expression matcher could backtrack on these; the rules only compare strings.
    rules = rules_of(["a" * 200 + "*", "{sub}" + "a" * 200 + "*"])
    assert not rules.allows("a" * 199 + "b", "a")
    assert rules.allows("a" * 250)


def test_a_topic_with_an_at_sign_belongs_to_the_user_after_it() -> None:
    assert owner_of("notes@42") == "42"
    assert owner_of("@42") == "42"
    assert owner_of("chat@a@b.example") == "a@b.example"
    assert owner_of("news") is None and owner_of("trailing@") is None


# Tokens


def test_a_good_hs256_token_gives_its_grant() -> None:
    grant = verifier(secret=SECRET).verify(
        token({"sub": "42", "subscribe": ["news"], "publish": ["chat:*"]}), time.time()
    )
    assert grant.sub == "42"
    assert grant.subscribe.allows("news") and grant.publish.allows("chat:x")
    assert grant.expires > time.time()


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": time.time() - 60}, "token expired"),
        ({"nbf": time.time() + 60}, "token not valid yet"),
        ({"subscribe": "news"}, "must be a list"),
        ({"subscribe": ["bad name"]}, "not a topic pattern"),
        ({"sub": 42}, "sub must be a string"),
    ],
)
def test_unusable_tokens_are_refused_with_their_reason(claims: dict[str, object], reason: str) -> None:
    with pytest.raises(AuthError, match=reason) as caught:
        verifier(secret=SECRET).verify(token(claims), time.time())
    assert caught.value.status == 401


def test_a_token_without_exp_is_refused() -> None:
    no_exp = jwt.encode({"sub": "42"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="required claim"):
        verifier(secret=SECRET).verify(no_exp, time.time())


def test_a_wrong_signature_says_nothing_of_the_key() -> None:
    with pytest.raises(AuthError) as caught:
        verifier(secret=SECRET).verify(token({}, "another-secret-of-enough-length-for-hs256"), time.time())
    assert caught.value.message == "token signature or format is invalid"
    assert SECRET not in caught.value.message


def test_alg_none_is_refused() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({"sub": "42", "exp": time.time() + 60}).encode()).rstrip(b"=")
    unsigned = f"{header}.{body.decode()}."
    with pytest.raises(AuthError, match="algorithm not accepted"):
        verifier(secret=SECRET).verify(unsigned, time.time())


def rsa_files(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    return private, str(path)


def test_rs256_and_the_key_confusion_attack(tmp_path: Path) -> None:
    private, key_file = rsa_files(tmp_path)
    check = verifier(secret=SECRET, key_file=key_file)
    assert check.verify(token({"sub": "1"}, private, "RS256"), time.time()).sub == "1"
    # HS256 "signed" with the public key's PEM as the secret: no HMAC key is that PEM.
    public_pem = Path(key_file).read_text()
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "1", "exp": time.time() + 60}).encode()).rstrip(b"=")
    signature = hmac.new(public_pem.encode(), header + b"." + body, hashlib.sha256).digest()
    confused = (header + b"." + body + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    with pytest.raises(AuthError):
        check.verify(confused, time.time())
    with pytest.raises(AuthError):
        verifier(key_file=key_file).verify(confused, time.time())


def test_es256_from_a_jwks_file_by_kid(tmp_path: Path) -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, private in (("one", first), ("two", second)):
        entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        keys.append({**entry, "kid": kid, "use": "sig", "alg": "ES256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    check = verifier(jwks_file=str(path))
    assert check.verify(token({"sub": "2"}, second, "ES256", kid="two"), time.time()).sub == "2"
    assert check.verify(token({"sub": "1"}, first, "ES256"), time.time()).sub == "1"  # no kid: each key
    with pytest.raises(AuthError):
        check.verify(token({"sub": "1"}, first, "ES256", kid="two"), time.time())


def test_keys_rotate_on_reload_and_a_broken_file_keeps_the_old_ones(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    check = verifier(secret_file=str(secret_file))
    old = token({"sub": "1"})
    assert check.verify(old, time.time()).sub == "1"
    new_secret = "the-next-secret-after-rotation-is-long-too"
    secret_file.write_text(new_secret)
    check.reload()
    with pytest.raises(AuthError):
        check.verify(old, time.time())  # the cache went with the old key
    assert check.verify(token({"sub": "1"}, new_secret), time.time()).sub == "1"
    secret_file.write_text("short")
    with pytest.raises(ConfigError):
        check.reload()
    assert check.verify(token({"sub": "1"}, new_secret), time.time()).sub == "1"


def test_issuer_and_audience_when_configured() -> None:
    check = verifier(TokenOptions(issuer="app", audience="rawsse"), secret=SECRET)
    assert check.verify(token({"iss": "app", "aud": "rawsse"}), time.time())
    for claims, reason in [
        ({"iss": "other", "aud": "rawsse"}, "issuer"),
        ({"iss": "app", "aud": "x"}, "audience"),
        ({}, "required claim"),
    ]:
        with pytest.raises(AuthError, match=reason):
            check.verify(token(claims), time.time())


def test_a_cached_token_still_expires() -> None:
    check = verifier(TokenOptions(leeway=0), secret=SECRET)
    short = token({"exp": time.time() + 30})
    assert check.verify(short, time.time())
    with pytest.raises(AuthError, match="expired"):
        check.verify(short, time.time() + 31)


def test_bad_key_files_are_refused_at_start(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private))  # with its private part
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    with pytest.raises(ConfigError, match="public keys only"):
        KeyRing(KeySources(jwks_file=str(path)))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        KeyRing(KeySources(secret="short"))
    short = tmp_path / "secret"
    short.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 32 bytes") as refused:
        KeyRing(KeySources(secret_file=str(short)))
    assert refused.value.name == "jwt_secret_file"  # named by the option that gave it


# Credentials and decisions


def access(**options: object) -> Access:
    return Access(AccessOptions(**options), verifier(secret=SECRET), Ledger(16))  # type: ignore[arg-type]


def test_a_credential_comes_from_the_header_the_cookie_or_where_allowed_the_url() -> None:
    check = access(token_cookie="session")
    assert check.credential(request(authorization="Bearer abc")) == "abc"
    assert check.credential(request(cookie="theme=dark; session=xyz")) == "xyz"
    assert check.credential(request()) is None
    with pytest.raises(AuthError, match="not accepted"):
        check.credential(request("topic=a&token=abc"))
    assert access(token_query=True).credential(request("topic=a&token=abc")) == "abc"


def test_public_topics_need_nothing_and_private_ones_a_token_that_allows_them() -> None:
    check = access(public_topics=rule_text_of("news,public:*"))
    check.check_subscribe(["news", "public:x"], None)
    with pytest.raises(AuthError, match="needs a token"):
        check.check_subscribe(["news", "secret"], None)
    grant = check.verifier.verify(token({"sub": "42", "subscribe": ["secret"]}), time.time())  # type: ignore[union-attr]
    check.check_subscribe(["secret", "notes@42", "news"], grant)
    with pytest.raises(Forbidden, match="notes@43"):
        check.check_subscribe(["notes@43"], grant)
    with pytest.raises(Forbidden):
        check.check_subscribe(["other"], grant)


def test_limits_count_users_and_addresses_and_trust_only_listed_proxies() -> None:
    check = Access(
        AccessOptions(
            max_streams_per_user=1, max_streams_per_ip=2, trusted_proxies=parse_networks("10.0.0.0/8")
        ),
        verifier(secret=SECRET),
        Ledger(16, count_users=True, count_addresses=True),
    )
    forwarded = request(x_forwarded_for="203.0.113.9, 10.1.1.1")
    assert check.client_address(forwarded, "10.0.0.1") == "203.0.113.9"
    assert check.client_address(forwarded, "198.51.100.1") == "198.51.100.1"  # not a trusted proxy
    assert check.client_address(request(x_forwarded_for="junk"), "10.0.0.1") == "10.0.0.1"
    ticket = request(authorization="Bearer " + token({"sub": "42", "subscribe": ["t"]}))
    first = check.for_stream(ticket, ["t"], "127.0.0.1")
    check.ledger.add(1, first, keep_rules=False)
    with pytest.raises(Exception, match="per user") as caught:
        check.for_stream(ticket, ["t"], "127.0.0.2")
    assert getattr(caught.value, "status", None) == 429
    check.ledger.release(1)
    assert check.for_stream(ticket, ["t"], "127.0.0.1").sub == "42"


# The ledger and its expiry wheel, on a fake clock


def test_expiries_come_due_by_the_second_and_closed_streams_are_skipped() -> None:
    ledger = Ledger(8)
    for slot, expires in [(1, 100.2), (2, 100.9), (3, 105.0)]:
        ledger.add(slot, StreamAccess(Grant("u", NO_TOPICS, NO_TOPICS, expires), None), keep_rules=False)
    assert ledger.expired(100.5) == []
    assert ledger.expired(101.0) == [1, 2]
    ledger.release(3)
    # The slot reused by another stream:
    ledger.add(3, StreamAccess(Grant("v", NO_TOPICS, NO_TOPICS, 200.0), None), keep_rules=False)
    assert ledger.expired(150.0) == []  # the first stream's entry is stale
    assert ledger.expired(200.0) == [3]
    assert ledger.streams_of("v") == [3] and ledger.streams_of("u") == [1, 2]


def test_nothing_expires_for_streams_without_an_expiry() -> None:
    ledger = Ledger(4)
    ledger.add(0, StreamAccess(Grant("u", NO_TOPICS, NO_TOPICS, math.inf), None), keep_rules=False)
    assert ledger.expired(1e12) == [] and len(ledger._wheel) == 0
    wheel = ExpiryWheel()
    wheel.add(3, 10.5)
    assert (len(wheel), wheel.due(10.9), wheel.due(11.0), len(wheel)) == (1, [], [3], 0)


# Found in review: the edges of each rule


def test_public_patterns_never_open_a_users_topic_nor_a_server_topic() -> None:
    check = access(public_topics=rule_text_of("*"))
    check.check_subscribe(["news", "a:b"], None)
    for private in ["notes@42", "@42", "$presence:news"]:
        with pytest.raises(AuthError):
            check.check_subscribe([private], None)
    everything = rules_of(["*", "news:*"])
    assert not everything.allows("$presence:news") and not everything.allows("$stats")
    assert rules_of(["$presence:*"]).allows("$presence:news")
    assert owner_of("$presence:chat@42") is None  # user 42 does not own the presence of its topic


def test_a_header_nested_to_exhaust_the_parser_is_a_401() -> None:
    nested = base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).rstrip(b"=").decode()
    for header in (nested, "A" * 5000):
        with pytest.raises(AuthError, match="signature or format"):
            verifier(secret=SECRET).verify(f"{header}.e30.sig", time.time())


@pytest.mark.parametrize("exp", [float("nan"), float("inf"), 10**400])
def test_an_exp_that_is_no_finite_time_is_a_401(exp: object) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "1", "exp": exp}).encode()).rstrip(b"=")
    signature = hmac.new(SECRET.encode(), header + b"." + body, hashlib.sha256).digest()
    signed = (header + b"." + body + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    with pytest.raises(AuthError):
        verifier(secret=SECRET).verify(signed, time.time())
    for until in ("NaN", "Infinity", "1" + "0" * 400):
        answer = grant_from_answer(200, b'{"sub": "1", "until": %s}' % until.encode(), 255)
        assert isinstance(answer, AppUnavailable)


def test_a_jwks_key_is_held_to_the_pem_rules(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    for key, algorithm, reason in [(weak, "RS256", "2048 bits"), (p384, "ES256", "P-256")]:
        entry = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(key))
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": [{**entry, "alg": algorithm, "use": "sig"}]}))
        with pytest.raises(ConfigError, match=reason):
            KeyRing(KeySources(jwks_file=str(path)))


def test_a_tokens_grant_lasts_as_long_as_the_leeway_that_accepted_it() -> None:
    expires = time.time() + 30
    grant = verifier(TokenOptions(leeway=5), secret=SECRET).verify(token({"exp": expires}), time.time())
    assert grant.expires == pytest.approx(int(expires) + 5, abs=1)


def test_the_wheel_is_rebuilt_when_closed_streams_fill_it() -> None:
    ledger = Ledger(4)
    for _ in range(5000):  # one client reconnecting over and over, on the same slot
        ledger.add(1, StreamAccess(Grant("u", NO_TOPICS, NO_TOPICS, 1e9), None), keep_rules=False)
        ledger.release(1)
    ledger.add(1, StreamAccess(Grant("u", NO_TOPICS, NO_TOPICS, 1e9), None), keep_rules=False)
    assert len(ledger._wheel) <= 2 * 4 + 1024 + 1
    assert ledger.expired(1e9) == [1]


# Time claims: one reading of each, and only JSON numbers


def signed(claims: dict[str, object], **headers: object) -> str:
    """An HS256 token of exactly `claims` (no exp added), signed with the tests' secret."""
    return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers or None)  # type: ignore[arg-type]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("shape", [str, lambda seconds: [seconds], lambda seconds: {"t": seconds}])
def test_a_time_claim_that_is_no_json_number_is_a_401(claim: str, shape: object) -> None:
    """PyJWT's own checks take a numeric string as a time; RFC 7519 says a NumericDate is
    a JSON number. An exp of "<now + 2>" would otherwise give a grant without end."""
    now = time.time()
    claims: dict[str, object] = {"sub": "42", "exp": int(now) + 2}
    claims[claim] = shape(int(now) + 2 if claim == "exp" else int(now) - 10)  # type: ignore[operator]
    check = verifier(TokenOptions(leeway=0), secret=SECRET)
    for _ in range(2):  # and never from the cache either
        with pytest.raises(AuthError, match=f"{claim} must be a number of Unix seconds") as caught:
            check.verify(signed(claims), now)
        assert caught.value.status == 401
    with pytest.raises(AuthError, match="exp must be a number"):
        check.verify(signed({"sub": "42", "exp": True}), now)  # a bool is no number either


def test_the_grant_expires_when_the_checked_exp_says_on_the_clock_it_is_given() -> None:
    check = verifier(TokenOptions(leeway=0), secret=SECRET)
    value = signed({"sub": "42", "exp": 1_000_002})
    grant = check.verify(value, 1_000_000.0)
    assert grant.expires == 1_000_002.0
    with pytest.raises(AuthError, match="token expired"):
        check.verify(value, 1_000_002.0)  # from the cache: its expiry is the exp
    with pytest.raises(AuthError, match="token expired"):
        verifier(TokenOptions(leeway=0), secret=SECRET).verify(value, 1_000_002.0)  # decoded afresh
    future = signed({"exp": 1_000_100, "nbf": 1_000_050})
    with pytest.raises(AuthError, match="not valid yet"):
        check.verify(future, 1_000_000.0)
    assert check.verify(future, 1_000_051.0).expires == 1_000_100.0


# A NumericDate, and shapes that are not one: strings of numbers, bools, null, lists,
# objects, NaN and the infinities, integers beyond any float.
EXP_SHAPES = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda offset: int(time.time()) + offset),
    st.floats(min_value=-(10**6), max_value=10**6).map(lambda offset: time.time() + offset),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.just(10**400),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda offset: str(int(time.time()) + offset)),
    st.floats().map(str),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def finite_json_number(value: object) -> float | None:
    """The test's own reading of a NumericDate, to judge a refusal by."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


@settings(max_examples=300, deadline=None)
@given(exp=EXP_SHAPES, leeway=st.sampled_from([0.0, 5.0]))
def test_any_accepted_claim_set_expires_when_its_exp_says(exp: object, leeway: float) -> None:
    """Whatever shape exp takes: refused, or a grant whose expiry is exp (a JSON
    number) and the leeway, finite, and a token PyJWT's own check accepts too."""
    now = time.time()
    value = signed({"sub": "1", "exp": exp})
    try:
        grant = verifier(TokenOptions(leeway=leeway), secret=SECRET).verify(value, now)
    except AuthError:
        seconds = finite_json_number(exp)
        assert seconds is None or seconds <= now - leeway  # not a time, or past: rightly refused
        return
    assert isinstance(exp, int | float) and not isinstance(exp, bool)
    assert math.isfinite(grant.expires) and grant.expires == float(exp) + leeway
    if exp > now - leeway + 2:  # clear of the second PyJWT's integer reading may round away
        jwt.decode(value, SECRET, algorithms=["HS256"], leeway=leeway)  # raises if it would refuse


# Key ids


def test_a_kid_no_key_has_is_refused_where_keys_have_ids(tmp_path: Path) -> None:
    """A token really signed by a trusted key, but naming another kid: refused, so that
    removing a key from the JWKS file revokes it whatever its tokens claim."""
    private = ec.generate_private_key(ec.SECP256R1())
    entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**entry, "kid": "one", "use": "sig", "alg": "ES256"}]}))
    check = verifier(jwks_file=str(path))
    assert check.verify(token({"sub": "1"}, private, "ES256", kid="one"), time.time()).sub == "1"
    for kid in ("../../etc/passwd", "two", "ONE", ""):
        with pytest.raises(AuthError, match="names a key id this server does not know") as caught:
            check.verify(token({"sub": "1"}, private, "ES256", kid=kid), time.time())
        assert "one" not in caught.value.message
    # A key without an id beside them (a PEM file during a move to JWKS) is still tried.
    pem_private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "old.pem"
    pem.write_bytes(
        pem_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    mixed = verifier(jwks_file=str(path), key_file=str(pem))
    assert mixed.verify(token({"sub": "3"}, pem_private, "ES256", kid="old"), time.time()).sub == "3"
    assert mixed.verify(token({"sub": "1"}, private, "ES256", kid="one"), time.time()).sub == "1"
    with pytest.raises(AuthError, match="signature or format"):  # tried with the PEM key: wrong
        mixed.verify(token({"sub": "1"}, private, "ES256", kid="two"), time.time())
    # A JWKS key id that is no string could never be named: refused at start.
    path.write_text(json.dumps({"keys": [{**entry, "kid": 7, "use": "sig", "alg": "ES256"}]}))
    with pytest.raises(ConfigError, match="key ids must be strings"):
        verifier(jwks_file=str(path))
    # Keys without ids (a secret, a PEM file): a kid chooses nothing and refuses nothing,
    # but a kid must still be a string (RFC 7515 4.1.4).
    assert verifier(secret=SECRET).verify(token({"sub": "2"}, kid="any"), time.time()).sub == "2"
    claims = {"sub": "2", "exp": time.time() + 60}
    for kid in (7, None, ["one"]):
        with pytest.raises(AuthError, match="signature or format"):
            verifier(secret=SECRET).verify(hs256_by_hand({"alg": "HS256", "kid": kid}, claims), time.time())


def hs256_by_hand(header: dict[str, object], claims: dict[str, object]) -> str:
    """A token with any header at all (PyJWT's encoder refuses some), signed with SECRET."""
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signature = hmac.new(SECRET.encode(), head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


# Credentials in the URL


@pytest.mark.parametrize("name", ["token", "tok%65n", "%74%6F%6B%65%6E", "t%6fken"])
def test_a_url_token_is_found_by_its_decoded_name_however_it_is_spelt(name: str) -> None:
    value = token({"sub": "1"})
    refusing = Access(AccessOptions(), verifier(secret=SECRET), Ledger(0))
    with pytest.raises(AuthError, match="tokens in the URL are not accepted"):
        refusing.credential(request(f"topic=news&{name}={value}"))
    allowing = Access(AccessOptions(token_query=True), verifier(secret=SECRET), Ledger(0))
    assert allowing.credential(request(f"topic=news&{name}={value}")) == value
    assert refusing.credential(request("topic=news&tokens=x&tok=y&token=")) is None  # no token there
    # Not hidden behind an empty one, nor behind a header that carries another token.
    for query in (f"token=&{name}={value}", f"token&{name}={value}"):
        with pytest.raises(AuthError, match="tokens in the URL"):
            refusing.credential(request(query))
    with pytest.raises(AuthError, match="tokens in the URL"):
        refusing.credential(request(f"{name}={value}", authorization=f"Bearer {value}"))
