# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the gateway role decides: the client-key table nginx matches, and a certificate's subjectAltNames.

Pure functions, no I/O; they raise ValueError with the variable to fix, and never put a key in a message. The filters
gateway_client_key_table and gateway_subject_alt_names are their shells.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# RFC 6750 b64token (token68): what may follow "Bearer " in an Authorization header.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
# A name goes into the access log and into a JSON error message unescaped: keep it plain.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
STATES = ("present", "revoked")
# Characters of a token68 key that a PCRE pattern would read as operators.
REGEX_SPECIAL = re.compile(r"([.+])")
DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME_PATTERN = re.compile(r"^(\*\.)?%s(\.%s)*$" % (DNS_LABEL, DNS_LABEL))
FIX_HINT = (
    "Each entry is {name: <user or team>, key: <secret>, state: present|revoked}; make a key with "
    "'openssl rand -hex 32' and keep the list in the vault."
)


def _problem(variable: str, text: str) -> ValueError:
    return ValueError("%s: %s %s" % (variable, text, FIX_HINT))


def _check_entry(entry: Any, index: int, variable: str, min_key_length: int) -> dict[str, str]:
    """One entry, checked alone; the error names the entry by position and name, never by key."""
    where = "%s[%d]" % (variable, index)
    if not isinstance(entry, dict):
        raise _problem(variable, "%s is not a mapping." % where)
    unknown = sorted(set(entry) - {"name", "key", "state"})
    if unknown:
        raise _problem(variable, "%s has unknown field(s) %s." % (where, ", ".join(unknown)))
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise _problem(variable, "%s needs a name of 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a "
                       "letter or digit (it goes into the access log and error messages)." % where)
    where = "%s[%d] (%s)" % (variable, index, name)
    state = entry.get("state", "present")
    if state not in STATES:
        raise _problem(variable, "%s has state '%s'; use present or revoked." % (where, state))
    key = entry.get("key")
    if not isinstance(key, str) or not key:
        raise _problem(variable, "%s has no key." % where)
    if len(key) < min_key_length:
        raise _problem(variable, "%s has a key of %d characters; keys need at least %d (gateway_client_key_min_length)."
                       % (where, len(key), min_key_length))
    if not KEY_PATTERN.match(key):
        raise _problem(variable, "%s has a key with characters a bearer token may not carry; use letters, digits and "
                       "'-._~+/' (and '=' only at the end)." % where)
    return {"name": name, "key": key, "state": state}


def _pattern(key: str) -> str:
    """An nginx map regex matching exactly 'Bearer <key>' (scheme in any case, as RFC 7235 allows), key case-kept.

    nginx lowercases a map's plain string keys before it looks them up, so a plain entry would accept the key in any
    case; a case-sensitive regex does not.
    """
    return "~^(?i:bearer) +%s$" % REGEX_SPECIAL.sub(r"\\\1", key)


def gateway_client_key_table(
    entries: Any,
    min_key_length: int = 32,
    reserved_keys: list[str] | None = None,
    variable: str = "gateway_client_keys",
) -> dict[str, list[dict[str, str]]]:
    """Validate the client keys and return {present: [{name, pattern}], revoked: [{name, pattern}]}.

    Names must be unique and no key may appear in two entries (a key both present and revoked would be both);
    reserved_keys (the router's own key) may not be handed to a client.
    """
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise _problem(variable, "must be a list, got %s." % type(entries).__name__)
    if not isinstance(min_key_length, int) or min_key_length < 16:
        raise ValueError("gateway_client_key_min_length is %r: set it to 16 or more (32 is the default)."
                         % (min_key_length,))
    checked = [_check_entry(entry, index, variable, min_key_length) for index, entry in enumerate(entries)]
    seen_names: dict[str, int] = {}
    seen_keys: dict[str, str] = {}
    reserved = set(reserved_keys or [])
    for index, entry in enumerate(checked):
        if entry["name"] in seen_names:
            raise _problem(variable, "%s[%d] and %s[%d] are both named '%s'; names must be unique (give a re-issued "
                           "key a new name, such as %s-2)." % (variable, seen_names[entry["name"]], variable, index,
                                                               entry["name"], entry["name"]))
        seen_names[entry["name"]] = index
        if entry["key"] in seen_keys:
            raise _problem(variable, "'%s' and '%s' have the same key; every entry needs its own key (a revoked key "
                           "stays revoked: issue a new one)." % (seen_keys[entry["key"]], entry["name"]))
        seen_keys[entry["key"]] = entry["name"]
        if entry["key"] in reserved:
            raise _problem(variable, "'%s' has the router's own key (router_api_key); clients get keys of their own."
                           % entry["name"])
    table: dict[str, list[dict[str, str]]] = {"present": [], "revoked": []}
    for entry in checked:
        table[entry["state"]].append({"name": entry["name"], "pattern": _pattern(entry["key"])})
    return table


def gateway_subject_alt_names(names: Any, variable: str = "gateway_tls_names") -> list[str]:
    """Turn host names and addresses into X.509 subjectAltName entries (DNS:... / IP:...), in order, once each."""
    if not isinstance(names, list):
        raise ValueError("%s must be a list of host names and addresses, got %s."
                         % (variable, type(names).__name__))
    result: list[str] = []
    for name in names:
        if name is None or str(name).strip() == "":
            continue
        text = str(name).strip()
        try:
            entry = "IP:%s" % ipaddress.ip_address(text)
        except ValueError:
            if not DNS_NAME_PATTERN.match(text) or len(text) > 253:
                raise ValueError("%s: '%s' is neither an IP address nor a DNS name; list the names and "
                                 "addresses clients use to reach the frontend." % (variable, text)) from None
            entry = "DNS:%s" % text.lower()
        if entry not in result:
            result.append(entry)
    if not result:
        raise ValueError("%s is empty: list at least one name or address clients use to reach the frontend."
                         % variable)
    return result
