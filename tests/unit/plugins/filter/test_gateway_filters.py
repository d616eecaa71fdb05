"""The gateway's decisions (plugin_utils/gateway.py) and their filters: the client-key table nginx matches, and the
certificate's subjectAltNames."""

import re

import pytest
from ansible.module_utils import _internal as module_utils_internal

# Importing controller code flips ansible-core's process-wide is_controller switch (see test_compat_filters.py).
_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.filter import (  # noqa: E402
    gateway_client_key_table,
    gateway_subject_alt_names,
)
from ansible_collections.llmfleet.workstation.plugins.plugin_utils.gateway import (  # noqa: E402
    gateway_client_key_table as key_table,
)
from ansible_collections.llmfleet.workstation.plugins.plugin_utils.gateway import (  # noqa: E402
    gateway_subject_alt_names as alt_names,
)

module_utils_internal.is_controller = _WAS_CONTROLLER

ALICE_KEY = "a1" * 20
TEAM_KEY = "Zz9-_.~+/" + "k" * 30 + "=="
OLD_KEY = "0ld" * 12


def nginx_regex(pattern):
    """nginx's map reads '~' as a case-sensitive PCRE; Python's re reads these patterns the same way."""
    assert pattern.startswith("~")
    return re.compile(pattern[1:])


def test_present_and_revoked_entries_are_split_and_keep_their_names():
    table = key_table([
        {"name": "alice", "key": ALICE_KEY},
        {"name": "team-data", "key": TEAM_KEY, "state": "present"},
        {"name": "bob", "key": OLD_KEY, "state": "revoked"},
    ])
    assert [client["name"] for client in table["present"]] == ["alice", "team-data"]
    assert [client["name"] for client in table["revoked"]] == ["bob"]


def test_pattern_matches_the_bearer_header_exactly():
    table = key_table([{"name": "team-data", "key": TEAM_KEY}])
    regex = nginx_regex(table["present"][0]["pattern"])
    assert regex.match("Bearer " + TEAM_KEY)
    assert regex.match("bearer " + TEAM_KEY)  # the scheme is case-insensitive (RFC 7235)
    assert not regex.match("Bearer " + TEAM_KEY.swapcase())  # the key is not
    assert not regex.match("Bearer " + TEAM_KEY + "x")
    assert not regex.match("Bearer x" + TEAM_KEY)
    # '.' and '+' are literal: a key with another character in their place does not match.
    assert not regex.match("Bearer " + TEAM_KEY.replace(".", "a").replace("+", "b"))
    assert not regex.match("Basic " + TEAM_KEY)


def test_an_empty_or_missing_list_gives_empty_tables():
    assert key_table([]) == {"present": [], "revoked": []}
    assert key_table(None) == {"present": [], "revoked": []}


@pytest.mark.parametrize("entries, expected", [
    ([{"name": "alice", "key": ALICE_KEY}, {"name": "alice", "key": TEAM_KEY}],
     r"gateway_client_keys\[0\] and gateway_client_keys\[1\] are both named 'alice'.*alice-2"),
    ([{"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": ALICE_KEY, "state": "revoked"}],
     "'alice' and 'bob' have the same key"),
    ([{"name": "alice", "key": "short"}],
     r"gateway_client_keys\[0\] \(alice\) has a key of 5 characters; keys need at least 32"),
    ([{"name": "alice", "key": ALICE_KEY + '";'}], "characters a bearer token may not carry"),
    ([{"name": "alice", "key": ALICE_KEY, "state": "disabled"}], "has state 'disabled'; use present or revoked"),
    ([{"name": "al ice", "key": ALICE_KEY}], r"gateway_client_keys\[0\] needs a name"),
    ([{"key": ALICE_KEY}], r"gateway_client_keys\[0\] needs a name"),
    ([{"name": "alice"}], r"\(alice\) has no key"),
    ([{"name": "alice", "key": ALICE_KEY, "owner": "x"}], "unknown field"),
    (["alice"], r"gateway_client_keys\[0\] is not a mapping"),
    ({"alice": ALICE_KEY}, "must be a list, got dict"),
])
def test_bad_entries_are_refused_naming_the_variable_and_the_fix(entries, expected):
    with pytest.raises(ValueError, match=expected) as raised:
        key_table(entries)
    message = str(raised.value)
    assert message.startswith("gateway_client_keys")
    assert "openssl rand -hex 32" in message


def test_no_error_message_shows_a_key():
    for entries in ([{"name": "a", "key": ALICE_KEY}, {"name": "b", "key": ALICE_KEY}],
                    [{"name": "a", "key": ALICE_KEY[:20]}]):
        with pytest.raises(ValueError) as raised:
            key_table(entries)
        assert ALICE_KEY[:20] not in str(raised.value)


def test_the_routers_key_is_not_handed_to_a_client():
    with pytest.raises(ValueError, match="'alice' has the router's own key"):
        key_table([{"name": "alice", "key": ALICE_KEY}], 32, [ALICE_KEY])


def test_the_minimum_length_is_configurable_but_not_below_16():
    assert key_table([{"name": "alice", "key": "k" * 20}], 20)["present"][0]["name"] == "alice"
    with pytest.raises(ValueError, match="gateway_client_key_min_length"):
        key_table([{"name": "alice", "key": ALICE_KEY}], 8)


def test_alt_names_classify_addresses_and_names_once_each_in_order():
    assert alt_names(["webui-a", "192.0.2.41", "WebUI-A", "chat.example.org", "2001:db8::1", "192.0.2.41", ""]) == [
        "DNS:webui-a", "IP:192.0.2.41", "DNS:chat.example.org", "IP:2001:db8::1"]


@pytest.mark.parametrize("names, expected", [
    (["bad name"], "'bad name' is neither an IP address nor a DNS name"),
    ([], "gateway_tls_names is empty"),
    ("webui-a", "must be a list"),
])
def test_alt_names_refuse_what_is_not_a_name(names, expected):
    with pytest.raises(ValueError, match=expected):
        alt_names(names)


def test_the_filters_are_registered_and_raise_ansibles_filter_error():
    table = gateway_client_key_table.FilterModule().filters()["gateway_client_key_table"]
    assert table([{"name": "alice", "key": ALICE_KEY}], 32, [])["present"][0]["name"] == "alice"
    with pytest.raises(AnsibleFilterError, match="gateway_client_keys: must be a list"):
        table("alice")
    names = gateway_subject_alt_names.FilterModule().filters()["gateway_subject_alt_names"]
    assert names(["webui-a"]) == ["DNS:webui-a"]
    with pytest.raises(AnsibleFilterError, match="gateway_tls_names is empty"):
        names([])
