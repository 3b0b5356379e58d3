"""The user resource (SPEC section 4): the domain record, its public view, and request models."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Literal

ROLES = ("Administrator", "Buyer", "Approver", "AccountAddressManager", "ProfileAddressManager")
ADMIN_ROLE = "Administrator"
ACTIVE = "ACTIVE"
SUSPENDED = "SUSPENDED"
INVITED = "INVITED"  # created, password not set yet (SPEC section 13)

Profile = Literal["customer", "partner", "sales_rep", "marketing", "administrator"]
Role = Literal["Administrator", "Buyer", "Approver", "AccountAddressManager", "ProfileAddressManager"]


@dataclass(frozen=True)
class Membership:
    account_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class User:
    """The record of one user. ``version`` grows by one with every committed change."""

    id: str
    email: str
    first_name: str
    last_name: str
    profile: str = "customer"
    status: str = ACTIVE
    email_verified: bool = False
    pending_email: str | None = None
    account_number: str | None = None
    default_account_id: str | None = None
    memberships: tuple[Membership, ...] = ()
    idp_sync: str = "synced"
    # what SES reported for the login email: ok | bounced | complained (SPEC section 16)
    deliverability: str = "ok"
    version: int = 1
    created_at: str = ""
    updated_at: str = ""
    tokens_valid_after: int = 0
    # INVITED when a suspension replaced INVITED: enabling gives the invitation state back, not ACTIVE
    suspended_from: str | None = None
    # purpose -> sha256 of the link that is currently valid for that purpose
    links: dict[str, str] = field(default_factory=dict)
    # The Auth0 sync marker as the store keeps it (read-only here: the store maintains it): what the
    # Auth0 copy is behind on, at which version, what Auth0 refused for good, and the push lease.
    sync_fields: frozenset[str] = frozenset()
    sync_version: int = 0
    sync_failed: frozenset[str] = frozenset()
    lease_until: float = 0

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def is_platform_admin(self) -> bool:
        return self.profile == "administrator"

    @property
    def account_ids(self) -> frozenset[str]:
        return frozenset(m.account_id for m in self.memberships)

    def administered_accounts(self) -> frozenset[str]:
        return frozenset(m.account_id for m in self.memberships if ADMIN_ROLE in m.roles)

    def evolve(self, **changes: Any) -> User:
        return replace(self, **changes)


def user_view(user: User, visible_accounts: frozenset[str] | None = None) -> dict[str, Any]:
    """The public JSON of a user. ``visible_accounts`` limits memberships (delegated administrators)."""
    memberships = [
        {"accountId": m.account_id, "roles": list(m.roles)}
        for m in user.memberships
        if visible_accounts is None or m.account_id in visible_accounts
    ]
    default_account = user.default_account_id
    if visible_accounts is not None and default_account not in visible_accounts:
        default_account = None
    return {
        "id": user.id,
        "email": user.email,
        "emailVerified": user.email_verified,
        "pendingEmail": user.pending_email,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "accountNumber": user.account_number,
        "profile": user.profile,
        "status": user.status,
        "defaultAccountId": default_account,
        "memberships": memberships,
        "idpSync": user.idp_sync,
        "deliverability": user.deliverability,
        "version": user.version,
        "createdAt": user.created_at,
        "updatedAt": user.updated_at,
    }


# ------------------------------------------------------------------------------------------------
# Field rules
# ------------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Unicode categories a name may not hold (security notes L6): format characters (Cf: zero-width
# spaces and joiners, the byte-order mark, the bidirectional controls U+202A-U+202E and U+2066-U+2069
# that reorder text in consoles and emails), surrogates (Cs: a lone one cannot be encoded as UTF-8),
# private use (Co) and unassigned code points (Cn), plus the line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# RFC 5321 section 4.1.2: a local part is a Dot-string (atoms joined by single dots: no leading,
# trailing or double dot; at most 64 octets); the domain is LDH labels of at most 63 characters.
# Quoted local parts and address literals are refused (no mail service of ours needs them), and
# so are Unicode (IDN) domains: send them in their punycode (xn--) form.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})+$")


def clean_name(value: str) -> str:
    """A first or last name: NFC, trimmed, 1 to 100 characters, only visible assigned characters.

    Raises ``ValueError`` for control, format (invisible, bidirectional), surrogate, private-use and
    unassigned characters.
    """
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must not contain invisible, private-use or unassigned characters")
    value = unicodedata.normalize("NFC", value).strip()
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value):
        raise ValueError("must not contain invisible, private-use or unassigned characters")
    if not 1 <= len(value) <= 100:
        raise ValueError("must be 1 to 100 characters")
    return value


def normalize_email(value: str) -> str:
    """A login email, lower-cased: RFC 5321 dot-string local part (<= 64), LDH domain, <= 254 in all."""
    value = value.strip().lower()
    local, _, _domain = value.rpartition("@")
    if len(value) > 254 or len(local) > 64 or not _EMAIL.match(value):
        raise ValueError("must be a valid email address")
    return value


DELIVERABLE = "ok"


def mail_blocked(user: User, address: str) -> bool:
    """SES reported the user's login email as bounced or complained: no mail goes to it (SPEC 16)."""
    return address == user.email and user.deliverability != DELIVERABLE
