"""Who may call what: inference keys name a tenant that reaches only its own models, an admin key
(or, without one, a loopback client) controls the repository. Transport-free: HTTP, gRPC and
SageMaker fronts pass the presented key and the client's address and map the errors raised here.

Rules (docs/auth.md):

- No inference keys configured: inference, metadata and statistics are open (every model).
- Inference keys configured: every call but health needs a key; a missing or unknown key is 401;
  a tenant's key reaches only the models its patterns match, and another tenant's model answers
  exactly like a model that does not exist (400 for a malformed name, else 404), so names cannot
  be probed; lists (repository index, statistics) show only the tenant's models.
- Model control (load, unload, repository rescans) and, when keys are configured, /metrics (its
  labels name models) need the admin key. With no admin key configured, a loopback client that
  presents no key acts as the admin (unless `loopback_control` is off); everyone else gets 403.
  A tenant's key never controls anything (403). The admin reaches every model.

Keys are never stored: the keys file and `admin_key_sha256` hold SHA-256 digests, and a presented
key is hashed once and looked up by its digest (see `Guard` for why that is constant-time enough).
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config import ServerSettings
from modelfleet.errors import Forbidden as Forbidden  # re-exported: the Guard's refusal
from modelfleet.errors import Unauthorized, model_not_found
from modelfleet.protocol.documents import IndexEntry, Statistics
from modelfleet.repository.names import check_model_name, check_version
from modelfleet.server.quota import Quota, QuotaConfig

log = logging.getLogger(__name__)

DIGEST_HOWTO = 'printf %s "$KEY" | sha256sum'
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_LOOPBACK_TEXT = frozenset({"127.0.0.1", "::1", "localhost"})


class AuthConfigError(ValueError):
    """The keys file or the admin key settings are unusable; the server refuses to start. The
    message never quotes a key field's value (it might be a key pasted instead of its digest)."""


class Access(enum.Enum):
    """What a call touches; every route of every front is one of these."""

    PUBLIC = "public"  # liveness, readiness: asked by orchestrators without keys
    SERVER = "server"  # server metadata, lists (the handler filters them by the principal)
    MODEL = "model"  # one model: inference, metadata, readiness, config, statistics
    CONTROL = "control"  # load, unload, repository rescans: changes what the server holds
    OPERATOR = "operator"  # /metrics: open without keys, the admin's when keys are configured


def key_digest(key: str | bytes) -> str:
    """The SHA-256 hex digest to put in the keys file or `admin_key_sha256` for `key`."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def presented_key(authorization: bytes | str | None, api_key: bytes | str | None) -> bytes | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `X-Api-Key: <key>`.

    An Authorization header with another scheme (Basic, AWS signatures) is not ours and is
    ignored, so a proxy's own credentials never count as a wrong key. Raw bytes are kept (no
    decoding) so that any key the client could send hashes to the digest it was issued with.
    """
    if authorization:
        raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
        scheme, _, rest = raw.strip().partition(b" ")
        if scheme.lower() == b"bearer" and rest.strip():
            return rest.strip()
    if api_key:
        raw = api_key.encode("latin-1") if isinstance(api_key, str) else api_key
        return raw.strip() or None
    return None


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback. The address is the TCP peer's: proxy
    headers (X-Forwarded-For) are never trusted, so a client cannot claim to be local."""
    if not host:
        return False  # a Unix socket or an unknown peer: not provably local
    if host in _LOOPBACK_TEXT:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class ModelPatterns:
    """A tenant's models: exact names and shell-style globs (`tenant-00042*`, `acme-?-v[12]`)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.exact = frozenset(p for p in patterns if not _is_glob(p))
        globs = [fnmatch.translate(p) for p in patterns if _is_glob(p)]
        self._glob = re.compile("|".join(globs)) if globs else None

    def __contains__(self, name: str) -> bool:
        if name in self.exact:
            return True
        return self._glob is not None and self._glob.match(name) is not None


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass(frozen=True, eq=False)
class Principal:
    """The caller of one request. `models` None: every model. `control`: may change the server.
    `quota`: the tenant's inference quota (server/quota.py), None for none."""

    name: str
    models: ModelPatterns | None
    control: bool = False
    quota: Quota | None = None

    def owns(self, name: str) -> bool:
        return self.models is None or name in self.models

    def check_model(self, name: str, version: str | None) -> None:
        """Nothing for the caller's own models; otherwise exactly the error an unknown model gets
        (400 for a malformed name or version, else 404 with the same message)."""
        if self.models is None or name in self.models:
            return
        check_model_name(name)
        if version is not None:
            check_version(version)
        raise model_not_found(name, version)

    def index(self, entries: list[IndexEntry]) -> list[IndexEntry]:
        """The repository index entries the caller may see."""
        if self.models is None:
            return entries
        return [e for e in entries if e.name in self.models]

    def statistics(self, doc: Statistics) -> Statistics:
        """The statistics document the caller may see: a tenant gets its models' entries only,
        and no server-wide memory totals (they count the other tenants' models and loads)."""
        if self.models is None:
            return doc
        return Statistics(model_stats=[e for e in doc.model_stats if e.name in self.models])


OPEN = Principal("anonymous", None)
_LOCAL_ADMIN = Principal("loopback", None, control=True)
_ADMIN = Principal("admin", None, control=True)


class Guard:
    """Built once from the settings; answers "who is this and may they do that" per request.

    Timing: a presented key is hashed with SHA-256 and the digest looked up in a dict. Lookup and
    string comparison there are not constant-time, but what they compare is the digest of the
    attacker's guess, not the guess: timing can at best tell how many leading bytes of a stored
    digest a guess's digest matches, and turning that into a key needs SHA-256 preimages. Hashing
    itself takes time that depends only on the key's length. So no byte of a key leaks, which is
    what `hmac.compare_digest` on the raw keys would buy, at one dict lookup per request.
    """

    def __init__(
        self,
        tenants: dict[str, tuple[list[str], list[str]]],
        admin_digest: str | None = None,
        loopback_control: bool = True,
        quotas: dict[str, QuotaConfig] | None = None,
    ) -> None:
        """`tenants`: name -> (key digests, model patterns); digests as SHA-256 hex. `quotas`:
        name -> the tenant's inference quota."""
        self._by_digest: dict[bytes, Principal] = {}
        quotas = quotas or {}
        for tenant, (digests, patterns) in tenants.items():
            quota = Quota(tenant, quotas[tenant]) if tenant in quotas else None
            principal = Principal(tenant, ModelPatterns(patterns), quota=quota)
            for digest in digests:
                raw = bytes.fromhex(digest)
                if raw in self._by_digest:
                    raise AuthConfigError(
                        f"tenant '{tenant}': a key digest is also listed for tenant "
                        f"'{self._by_digest[raw].name}'; each key belongs to one tenant"
                    )
                self._by_digest[raw] = principal
        self.enabled = bool(self._by_digest)
        """Inference keys are configured: every call but health needs one."""
        self.has_admin_key = admin_digest is not None
        if admin_digest is not None:
            raw = bytes.fromhex(admin_digest)
            if raw in self._by_digest:
                raise AuthConfigError("the admin key must differ from every inference key")
            self._by_digest[raw] = _ADMIN
        self._loopback_control = loopback_control and admin_digest is None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Guard:
        tenants, quotas = load_tenants(settings.auth_keys_file) if settings.auth_keys_file else ({}, {})
        admin = settings.admin_key_digest()
        guard = cls(tenants, admin, settings.loopback_control, quotas)
        if guard._loopback_control and not is_loopback(settings.host):
            log.warning(
                "no admin key: model control is open to loopback clients only; behind a proxy or "
                "sidecar on this host every client is loopback, so set MODELFLEET_ADMIN_KEY or "
                "MODELFLEET_LOOPBACK_CONTROL=false"
            )
        if guard.enabled:
            log.info(
                "authentication on: %d tenant(s), admin key %s", len(tenants), "set" if admin else "not set"
            )
        return guard

    def identify(self, key: bytes | None, client_host: str | None) -> Principal | None:
        """The caller a key (or, with no admin key, a loopback address) names; None when nothing
        does. 401 for a key that names nobody while inference keys are configured; without them
        an unknown key is ignored (it may be meant for a proxy)."""
        if key is not None:
            principal = self._by_digest.get(hashlib.sha256(key).digest())
            if principal is not None:
                return principal
            if self.enabled:
                raise Unauthorized("invalid API key")
        if self._loopback_control and is_loopback(client_host):
            return _LOCAL_ADMIN
        return None

    def admit(
        self,
        access: Access,
        key: bytes | None,
        client_host: str | None,
        name: str | None = None,
        version: str | None = None,
    ) -> Principal:
        """The caller if it may make a call of this kind (on model `name` for Access.MODEL);
        raises 401, 403 or the unknown-model error otherwise."""
        if access is Access.PUBLIC:
            return OPEN
        principal = self.identify(key, client_host)
        if access is Access.CONTROL or (access is Access.OPERATOR and self.enabled):
            return self._check_control(principal)
        if principal is None:
            if self.enabled:
                raise Unauthorized(
                    "missing API key: send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'"
                )
            principal = OPEN
        if access is Access.MODEL:
            assert name is not None
            principal.check_model(name, version)
        return principal

    def _check_control(self, principal: Principal | None) -> Principal:
        if principal is not None and principal.control:
            return principal
        if principal is not None and principal.models is not None:
            raise Forbidden("inference keys cannot control models or read server metrics; use the admin key")
        if self.has_admin_key:
            raise Unauthorized("this call needs the admin key: send 'Authorization: Bearer <admin key>'")
        raise Forbidden(
            "model control is allowed only from loopback clients when no admin key is configured "
            "(set MODELFLEET_ADMIN_KEY to allow it from elsewhere)"
        )


# -- the keys file -----------------------------------------------------------------------------------------


def load_keys_file(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """The tenants of the keys file: name -> (key digests, model patterns)."""
    return load_tenants(path)[0]


def load_tenants(path: Path) -> tuple[dict[str, tuple[list[str], list[str]]], dict[str, QuotaConfig]]:
    """Read and check the keys file (YAML or JSON; blocking, at start only): the tenants, and the
    quotas of those that have one.

    tenants:
      acme:
        keys: [<sha256 hex digest of a key>, ...]
        models: [acme-classifier, "acme-*"]
        quota: {rate_per_s: 200, burst: 400, max_concurrent: 32}   # optional, each field too
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthConfigError(f"cannot read the keys file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise AuthConfigError(f"the keys file {path} is not valid YAML or JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"tenants"} or not isinstance(doc["tenants"], dict):
        raise AuthConfigError(
            f"the keys file {path} must hold one mapping, 'tenants: {{NAME: {{keys, models}}}}'"
        )
    tenants = {str(name): _tenant(str(name), entry) for name, entry in doc["tenants"].items()}
    quotas = {
        str(name): _quota(str(name), entry["quota"])
        for name, entry in doc["tenants"].items()
        if "quota" in entry
    }
    return tenants, quotas


def _quota(name: str, entry: Any) -> QuotaConfig:
    fields = {"rate_per_s", "burst", "max_concurrent"}
    if not isinstance(entry, dict) or not entry or not set(entry) <= fields:
        raise AuthConfigError(
            f"tenant '{name}': 'quota' takes rate_per_s, burst and max_concurrent (any of them)"
        )
    for field, value in entry.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not number or (field != "rate_per_s" and not isinstance(value, int)):
            kind = "a positive number" if field == "rate_per_s" else "a positive integer"
            raise AuthConfigError(f"tenant '{name}': quota.{field} must be {kind}, got {value!r}")
    if "burst" in entry and "rate_per_s" not in entry:
        raise AuthConfigError(f"tenant '{name}': quota.burst needs quota.rate_per_s")
    return QuotaConfig(entry.get("rate_per_s"), entry.get("burst"), entry.get("max_concurrent"))


def _tenant(name: str, entry: Any) -> tuple[list[str], list[str]]:
    if not isinstance(entry, dict) or not {"keys", "models"} <= set(entry) <= {"keys", "models", "quota"}:
        raise AuthConfigError(
            f"tenant '{name}' must have exactly 'keys' and 'models' (and optionally 'quota')"
        )
    keys, models = entry["keys"], entry["models"]
    if not isinstance(keys, list) or not keys:
        raise AuthConfigError(f"tenant '{name}': 'keys' must be a non-empty list of SHA-256 hex digests")
    for i, digest in enumerate(keys):
        if not isinstance(digest, str) or not _HEX_DIGEST.fullmatch(digest):
            raise AuthConfigError(
                f"tenant '{name}': keys[{i}] is not a SHA-256 hex digest (64 hex characters); the file "
                f"holds digests, never keys: make one with {DIGEST_HOWTO}"
            )
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise AuthConfigError(
            f"tenant '{name}': 'models' must be a non-empty list of model names or globs ('acme-*')"
        )
    return [k.lower() for k in keys], models
