"""The Guard: keys to tenants, tenants to models, control to the admin or loopback; the keys file."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfleet.config import ServerSettings
from modelfleet.engine.stats import ModelStats
from modelfleet.errors import BadRequest, ModelfleetError, NotFound, Unauthorized, model_not_found
from modelfleet.protocol.documents import IndexEntry, Memory, Statistics
from modelfleet.repository.config import format_validation_error
from modelfleet.server.auth import (
    Access,
    AuthConfigError,
    Forbidden,
    Guard,
    ModelPatterns,
    is_loopback,
    key_digest,
    load_keys_file,
    presented_key,
)

KEY_A = "acme-0123456789abcdef"
KEY_B = "beta-fedcba9876543210"
ADMIN = "admin-key-0123456789"
LOCAL, REMOTE = "127.0.0.1", "10.0.0.5"
TENANTS = {
    "acme": ([key_digest(KEY_A)], ["acme-classifier", "shared-*"]),
    "beta": ([key_digest(KEY_B)], ["beta-?", "tenant-00042*"]),
}


def guard(admin: str | None = ADMIN, tenants: bool = True, loopback_control: bool = True) -> Guard:
    return Guard(TENANTS if tenants else {}, key_digest(admin) if admin else None, loopback_control)


def k(key: str) -> bytes:
    return key.encode()


def error_of(exc_info: pytest.ExceptionInfo[ModelfleetError]) -> tuple[int, str]:
    return exc_info.value.status, exc_info.value.message


# -- keys in requests -------------------------------------------------------------------------------------


def test_key_digest_is_sha256_hex_of_the_utf8_key() -> None:
    assert key_digest("é-key") == hashlib.sha256("é-key".encode()).hexdigest()
    assert key_digest(b"raw") == hashlib.sha256(b"raw").hexdigest()


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        (b"Bearer abc", None, b"abc"),
        (b"bearer   abc  ", None, b"abc"),
        ("Bearer abc", None, b"abc"),  # gRPC metadata comes as text
        (None, b"xyz", b"xyz"),
        (b"Bearer abc", b"xyz", b"abc"),  # Authorization wins
        (b"Basic dXNlcjpwdw==", b"xyz", b"xyz"),  # another scheme is a proxy's, not ours
        (b"Basic dXNlcjpwdw==", None, None),
        (b"Bearer ", None, None),
        (None, b"  ", None),
        (None, None, None),
    ],
)
def test_presented_key(authorization: bytes | None, api_key: bytes | None, expected: bytes | None) -> None:
    assert presented_key(authorization, api_key) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("::ffff:10.0.0.5", False),
        ("2001:db8::1", False),
        ("not-an-address", False),
        ("", False),
        (None, False),  # a Unix socket peer: not provably local
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_model_patterns_exact_and_globs() -> None:
    patterns = ModelPatterns(["exact", "tenant-00042*", "v-?", "ab[cd]"])
    assert "exact" in patterns
    assert "exactly" not in patterns
    assert "tenant-00042" in patterns and "tenant-00042-large" in patterns
    assert "tenant-00043" not in patterns and "x-tenant-00042" not in patterns
    assert "v-1" in patterns and "v-12" not in patterns
    assert "abc" in patterns and "abe" not in patterns


# -- inference keys ----------------------------------------------------------------------------------------


def test_without_keys_inference_is_open_to_everyone() -> None:
    g = guard(admin=None, tenants=False)
    assert not g.enabled
    who = g.admit(Access.MODEL, None, REMOTE, "any-model", None)
    assert who.owns("any-model") and not who.control
    assert g.admit(Access.MODEL, b"some proxy token", REMOTE, "m", None).owns("m")  # ignored, not 401


def test_missing_key_is_401() -> None:
    with pytest.raises(Unauthorized, match="missing API key"):
        guard().admit(Access.MODEL, None, REMOTE, "acme-classifier", None)
    with pytest.raises(Unauthorized):
        guard().admit(Access.SERVER, None, REMOTE)


def test_public_calls_need_no_key() -> None:
    assert guard().admit(Access.PUBLIC, None, REMOTE) is not None
    assert guard().admit(Access.PUBLIC, b"wrong", REMOTE) is not None


@pytest.mark.parametrize(
    "wrong",
    [
        KEY_A[:-1] + "g",  # differs in the last character only
        KEY_A[:-1],  # a prefix
        KEY_A + "x",  # a suffix added
        key_digest(KEY_A),  # the stored digest itself is not a key
        KEY_A.upper(),
        "",
    ],
)
def test_wrong_keys_are_401_however_close(wrong: str) -> None:
    """Keys are compared by their full SHA-256 digests: nothing partial or case-folded passes."""
    g = guard()
    with pytest.raises(Unauthorized, match="invalid API key"):
        g.admit(Access.MODEL, k(wrong) or b"\x00", REMOTE, "acme-classifier", None)
    assert g.admit(Access.MODEL, k(KEY_A), REMOTE, "acme-classifier", None).name == "acme"


def test_non_ascii_and_binary_keys_are_just_wrong() -> None:
    """Digests are compared, never the keys (hmac.compare_digest refuses non-ASCII text)."""
    for raw in ("clé-ünïcode".encode(), b"\xff\xfe\x00\x01", b"a" * 10_000):
        with pytest.raises(Unauthorized):
            guard().admit(Access.MODEL, raw, REMOTE, "acme-classifier", None)


def test_a_tenant_reaches_its_own_models() -> None:
    g = guard()
    assert g.admit(Access.MODEL, k(KEY_A), REMOTE, "shared-embedder", "2").name == "acme"
    assert g.admit(Access.MODEL, k(KEY_B), REMOTE, "tenant-00042-v2", None).name == "beta"


@pytest.mark.parametrize(("name", "version"), [("beta-1", None), ("beta-1", "3"), ("tenant-00042", None)])
def test_another_tenants_model_answers_like_an_unknown_model(name: str, version: str | None) -> None:
    with pytest.raises(NotFound) as foreign:
        guard().admit(Access.MODEL, k(KEY_A), REMOTE, name, version)
    assert error_of(foreign) == (404, model_not_found(name, version).message)


@pytest.mark.parametrize(("name", "version"), [("../etc", None), ("beta-1", "../x"), ("beta-1", "canary")])
def test_a_malformed_name_gets_the_unknown_models_400(name: str, version: str | None) -> None:
    """An unknown model with a malformed name or version is 400; a foreign one must be too."""
    with pytest.raises(BadRequest) as foreign:
        guard().admit(Access.MODEL, k(KEY_A), REMOTE, name, version)
    assert foreign.value.status == 400


def test_lists_show_only_the_tenants_models() -> None:
    acme = guard().admit(Access.SERVER, k(KEY_A), REMOTE)
    names = ("acme-classifier", "beta-1", "shared-x", "zzz")
    entries = [IndexEntry(name=n, state="READY", reason="") for n in names]
    assert [e.name for e in acme.index(entries)] == ["acme-classifier", "shared-x"]
    beta, shared = (ModelStats().statistics(n, "1") for n in ("beta-1", "shared-x"))
    memory = Memory(
        budget_bytes=1, used_bytes=0, resident_models=2, known_models=9, blob_bytes=0,
        loads=2, load_failures=0, cold_starts=0, evictions=0,
    )  # fmt: skip
    stats = Statistics(model_stats=[beta, shared], memory=memory)
    assert acme.statistics(stats) == Statistics(model_stats=[shared])  # no memory totals either
    admin = guard().admit(Access.SERVER, k(ADMIN), REMOTE)
    assert admin.index(entries) == entries and admin.statistics(stats) == stats


# -- control ----------------------------------------------------------------------------------------------


def test_control_with_a_tenant_key_is_403_even_from_loopback() -> None:
    for g in (guard(), guard(admin=None)):
        for host in (LOCAL, REMOTE):
            with pytest.raises(Forbidden):
                g.admit(Access.CONTROL, k(KEY_A), host)


def test_control_with_the_admin_key_from_anywhere() -> None:
    for host in (LOCAL, REMOTE, None):
        who = guard().admit(Access.CONTROL, k(ADMIN), host)
        assert who.control and who.owns("beta-1") and who.owns("anything")


def test_with_an_admin_key_control_without_it_is_401_even_from_loopback() -> None:
    for host in (LOCAL, REMOTE):
        with pytest.raises(Unauthorized, match="admin key"):
            guard().admit(Access.CONTROL, None, host)
    with pytest.raises(Unauthorized, match="invalid API key"):
        guard().admit(Access.CONTROL, k("nope"), LOCAL)


def test_without_an_admin_key_control_only_from_loopback() -> None:
    for tenants in (True, False):
        g = guard(admin=None, tenants=tenants)
        assert g.admit(Access.CONTROL, None, LOCAL).control
        assert g.admit(Access.CONTROL, None, "::1").control
        for host in (REMOTE, None):
            with pytest.raises(Forbidden, match="loopback"):
                g.admit(Access.CONTROL, None, host)


def test_loopback_control_can_be_turned_off() -> None:
    g = guard(admin=None, tenants=False, loopback_control=False)
    with pytest.raises(Forbidden):
        g.admit(Access.CONTROL, None, LOCAL)


def test_metrics_are_open_without_keys_and_the_admins_with_them() -> None:
    assert guard(admin=None, tenants=False).admit(Access.OPERATOR, None, REMOTE)
    with pytest.raises(Forbidden):
        guard().admit(Access.OPERATOR, k(KEY_A), REMOTE)
    assert guard().admit(Access.OPERATOR, k(ADMIN), REMOTE).control


def test_errors_never_hold_a_key() -> None:
    g = guard()
    for key, access in [(KEY_A, Access.CONTROL), ("wrong-" + KEY_B, Access.MODEL), (KEY_B, Access.MODEL)]:
        with pytest.raises(ModelfleetError) as exc_info:
            g.admit(access, k(key), REMOTE, "acme-classifier", None)
        assert key not in exc_info.value.message and key_digest(key) not in exc_info.value.message


# -- configuration ----------------------------------------------------------------------------------------


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc) if path.suffix == ".json" else str(doc))
    return path


def test_keys_file_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text(
        f"tenants:\n  acme:\n    keys: [{key_digest(KEY_A).upper()}]\n    models: [acme-classifier, 'shared-*']\n"
    )
    json_file = write(
        tmp_path / "keys.json", {"tenants": {"acme": {"keys": [key_digest(KEY_A)], "models": ["m"]}}}
    )
    assert load_keys_file(yaml_file) == {"acme": ([key_digest(KEY_A)], ["acme-classifier", "shared-*"])}
    assert load_keys_file(json_file)["acme"][1] == ["m"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tenants": {"acme": {"keys": [KEY_A], "models": ["m"]}}}, "keys[0] is not a SHA-256 hex digest"),
        ({"tenants": {"acme": {"keys": [], "models": ["m"]}}}, "non-empty list of SHA-256"),
        ({"tenants": {"acme": {"keys": [key_digest(KEY_A)], "models": []}}}, "'models' must be"),
        ({"tenants": {"acme": {"keys": [key_digest(KEY_A)]}}}, "exactly 'keys' and 'models'"),
        ({"tenant": {}}, "must hold one mapping"),
        ([1, 2], "must hold one mapping"),
    ],
)
def test_bad_keys_files_are_refused_without_quoting_values(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(AuthConfigError, match=re.escape(message)) as exc_info:
        load_keys_file(write(tmp_path / "keys.json", doc))
    assert KEY_A not in str(exc_info.value)


def test_unreadable_keys_files(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_keys_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("tenants: [unclosed")
    with pytest.raises(AuthConfigError, match="not valid YAML or JSON"):
        load_keys_file(tmp_path / "bad.yaml")


def test_a_key_belongs_to_one_tenant_and_differs_from_the_admin_key() -> None:
    with pytest.raises(AuthConfigError, match="each key belongs to one tenant"):
        Guard({"a": ([key_digest(KEY_A)], ["x"]), "b": ([key_digest(KEY_A)], ["y"])})
    with pytest.raises(AuthConfigError, match="admin key must differ"):
        Guard(TENANTS, key_digest(KEY_A))


def test_settings_hold_the_admin_key_as_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_ADMIN_KEY", ADMIN)
    settings = ServerSettings(repository=tmp_path)
    assert settings.admin_key_digest() == key_digest(ADMIN)
    assert ADMIN not in repr(settings) and ADMIN not in str(settings.model_dump())
    monkeypatch.delenv("MODELFLEET_ADMIN_KEY")
    by_digest = ServerSettings(repository=tmp_path, admin_key_sha256=key_digest(ADMIN).upper())
    assert by_digest.admin_key_digest() == key_digest(ADMIN)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"admin_key": "short-secret"}, "shorter than 16 characters"),
        ({"admin_key": ADMIN, "admin_key_sha256": key_digest(ADMIN)}, "not both"),
        ({"admin_key_sha256": "short-secret"}, "admin_key_sha256"),
        ({"auth_keys_file": "/nonexistent/keys.yaml"}, "is not a file"),
    ],
)
def test_bad_auth_settings_are_refused_without_echoing(
    tmp_path: Path, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError) as exc_info:
        ServerSettings(repository=tmp_path, **fields)
    assert message in format_validation_error(exc_info.value)
    assert "short-secret" not in str(exc_info.value) and ADMIN not in str(exc_info.value)


def test_guard_from_settings(tmp_path: Path) -> None:
    keys = write(
        tmp_path / "keys.json", {"tenants": {"acme": {"keys": [key_digest(KEY_A)], "models": ["m"]}}}
    )
    g = Guard.from_settings(ServerSettings(repository=tmp_path, auth_keys_file=keys, admin_key=ADMIN))
    assert g.enabled and g.has_admin_key
    assert g.admit(Access.MODEL, k(KEY_A), REMOTE, "m", None).name == "acme"
    assert not Guard.from_settings(ServerSettings(repository=tmp_path)).enabled


def test_a_warning_when_control_rests_on_loopback_on_a_public_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Guard.from_settings(ServerSettings(repository=tmp_path, host="0.0.0.0"))
    assert "MODELFLEET_ADMIN_KEY" in caplog.text
    caplog.clear()
    Guard.from_settings(ServerSettings(repository=tmp_path, host="0.0.0.0", admin_key=ADMIN))
    Guard.from_settings(ServerSettings(repository=tmp_path, host="127.0.0.1"))
    assert "MODELFLEET_ADMIN_KEY" not in caplog.text and ADMIN not in caplog.text
