"""The SXP dialect: parsing, writing, pretty printing and the element helpers (reference §2)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xend import sxp
from xend.sxp import ParseError

# Any text within latin-1 (every atom is a latin-1-decoded byte string): control characters,
# quotes, backslashes, '#', parentheses, non-ASCII, and the empty string.
latin1_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=12)
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
tricky_text = st.sampled_from(["", "'", '"', "\\", "#", "(", ")", "@", "a b", "it's", "\x04",
                               "\x00", "\x7f", "\xa0", "\xad", "\xff", ";", "[x]", "\\q"])
sxp_values = st.recursive(st.one_of(latin1_text, tricky_text, any_text),
                          lambda kids: st.lists(kids, max_size=5), max_leaves=25)
latin1_values = st.recursive(st.one_of(latin1_text, tricky_text),
                             lambda kids: st.lists(kids, max_size=5), max_leaves=25)


# -- round trips --------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(sxp_values)
def test_parse_of_to_string_gives_the_value_back(value):
    assert sxp.parse_all(sxp.to_string(value)) == [value]


@settings(max_examples=200, deadline=None)
@given(sxp_values, st.integers(min_value=1, max_value=100))
def test_parse_of_prettyprint_gives_the_value_back(value, width):
    assert sxp.parse_all(sxp.prettyprint(value, width=width)) == [value]


@settings(max_examples=100, deadline=None)
@given(sxp_values)
def test_round_trip_through_utf8_bytes(value):
    assert sxp.parse_all(sxp.to_string(value).encode("utf-8")) == [value]


@settings(max_examples=100, deadline=None)
@given(latin1_values)
def test_to_string_output_is_ascii(value):
    # Non-ASCII within latin-1 is escaped, as Python 2's repr did.
    assert sxp.to_string(value).isascii()


@settings(max_examples=100, deadline=None)
@given(st.lists(sxp_values, max_size=4))
def test_several_top_level_values_round_trip(values):
    text = "\n".join(sxp.to_string(v) for v in values)
    assert sxp.parse_all(text) == values


# -- lexical rules (§2.2) -------------------------------------------------------------------------
def test_every_atom_is_a_string():
    assert sxp.parse_all("(xend-port 8000) (x -1 1.5 0x10 t nil)") == [
        ["xend-port", "8000"], ["x", "-1", "1.5", "0x10", "t", "nil"]]


def test_empty_and_comment_only_input_give_no_values():
    assert sxp.parse_all("") == []
    assert sxp.parse_all("  \n# just a comment\n\t\n") == []
    assert sxp.from_string("") == []


def test_hash_starts_a_comment_even_right_after_an_atom():
    assert sxp.parse_all("(a#b c)\n)") == [["a"]]
    assert sxp.parse_all("(a # comment ( ) \n b)") == [["a", "b"]]


def test_semicolon_is_not_a_comment_but_a_separator():
    assert sxp.parse_all("(a;b [c] {d} <e>)") == [["a", ";b", "[c", "]", "{d", "}", "<e", ">"]]


def test_quotes_inside_an_atom_are_literal():
    assert sxp.parse_all("(a\"b c'd)") == [['a"b', "c'd"]]


def test_top_level_atoms_are_returned_as_strings():
    assert sxp.parse_all("foo bar (baz)") == ["foo", "bar", ["baz"]]


def test_eot_at_top_level_ends_the_input():
    assert sxp.parse_all("(a) \x04 (b)") == [["a"]]


def test_both_quote_characters_delimit_strings():
    assert sxp.parse_all("""('a "b" c' "d 'e' f" '' "")""") == [['a "b" c', "d 'e' f", "", ""]]


def test_hash_inside_a_string_is_literal():
    assert sxp.parse_all("(a '# not a comment')") == [["a", "# not a comment"]]


def test_shipped_hosts_allow_value_has_one_backslash():
    text = r"(xend-relocation-hosts-allow '^localhost$ ^localhost\\.localdomain$')"
    assert sxp.parse_all(text) == [["xend-relocation-hosts-allow",
                                    r"^localhost$ ^localhost\.localdomain$"]]


# -- escapes (§2.3) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("written, value", [
    (r'"\a\b\t\n\v\f\r"', "\a\b\t\n\v\f\r"),
    (r"'\\ \' \"'", "\\ ' \""),
    (r'"\x41\x7e\xff"', "A~\xff"),
    (r'"\101\60\0"', "A0\x00"),
    (r'"\1234"', "S4"),             # at most three octal digits
    (r'"\18"', "\x018"),            # a non-octal character ends the escape
    (r'"x\qy"', "x\\y"),            # unknown escape: a lone backslash, the character dropped
    (r'"\377"', "\xff"),
])
def test_escapes(written, value):
    assert sxp.parse_all(written) == [value]


def test_octal_escape_above_255_is_an_error():
    with pytest.raises(ParseError, match="invalid octal escape: out of range 400"):
        sxp.parse_all(r'"\400"')


def test_short_hex_escape_is_an_error():
    with pytest.raises(ParseError, match="invalid hex escape"):
        sxp.parse_all(r'"\x4g"')


@pytest.mark.parametrize("text", ['"abc', "'abc\\", "(a 'b)"])
def test_end_of_input_inside_a_string_is_an_error(text):
    with pytest.raises(ParseError, match="unexpected EOF"):
        sxp.parse_all(text)


# -- errors carry line and column -------------------------------------------------------------------
def test_unbalanced_parens_report_the_unclosed_paren():
    with pytest.raises(ParseError) as info:
        sxp.parse_all("# header\n(a (b c)\n  (d e)\n", source="f.sxp")
    e = info.value
    assert (e.line, e.column, e.source) == (2, 1, "f.sxp")
    assert "unexpected EOF" in e.message
    assert str(e).startswith("f.sxp:2:1: ")


def test_unbalanced_parens_nested_on_a_later_line():
    with pytest.raises(ParseError) as info:
        sxp.parse_all("(a)\n(b\n   (c d")
    assert (info.value.line, info.value.column) == (3, 4)


def test_close_paren_at_top_level():
    with pytest.raises(ParseError) as info:
        sxp.parse_all("(a b)\n  )\n")
    assert (info.value.line, info.value.column) == (2, 3)
    assert info.value.message == "syntax error: )"


def test_unterminated_string_points_at_its_opening_quote():
    with pytest.raises(ParseError) as info:
        sxp.parse_all("(a b)\n(c 'never closed)\n(d e)\n")
    assert (info.value.line, info.value.column) == (2, 4)
    assert "unexpected EOF" in info.value.message


def test_invalid_character_at_token_start():
    with pytest.raises(ParseError) as info:
        sxp.parse_all("(a\n \x01b)")
    assert (info.value.line, info.value.column) == (2, 2)
    assert info.value.message == "invalid character: code 1"


def test_non_printable_inside_an_atom_is_kept():
    assert sxp.parse_all("(a\x01b)") == [["a\x01b"]]


def test_bytes_are_read_as_utf8_else_latin1():
    assert sxp.parse_all(b"(a '\xc3\xa9')") == [["a", "\xe9"]]
    assert sxp.parse_all(b"(a '\xe9')") == [["a", "\xe9"]]


# -- writing (§2.5) ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    ("vif-bridge", "vif-bridge"),
    ("/var/log/xen/xend.log", "/var/log/xen/xend.log"),
    ("127.0.0.1:9367", "127.0.0.1:9367"),
    ("@", "@"),
    ("~user_a-b.c", "~user_a-b.c"),
    ("", "''"),
    ("a b", "'a b'"),
    ("k=v", "'k=v'"),
    ("it's", '"it\'s"'),
    ("it's \"q\"", "'it\\'s \"q\"'"),
    ("tab\t", "'tab\\t'"),
    ("back\\slash", "'back\\\\slash'"),
    ("\xc3\xbc", "'\\xc3\\xbc'"),
    ("\x00\x7f", "'\\x00\\x7f'"),
    (256, "256"),
    (2.5, "2.5"),
    (True, "True"),
    (None, "'None'"),
    ([], "()"),
    (["a", ["b", ""], []], "(a (b '') ())"),
])
def test_to_string(value, text):
    assert sxp.to_string(value) == text


def test_prettyprint_layout_of_the_reference_example():
    value = sxp.from_string(
        "(domain (domid 3) (name guest1) (image (linux (kernel /boot/vmlinuz-2.6.18-xen)"
        " (args 'root=/dev/xvda1 ro console=hvc0'))) (state -b----)"
        " (device (vbd (uname phy:/dev/vg0/guest1) (dev xvda) (mode w))))")
    assert sxp.prettyprint(value, width=78) == """\
(domain
    (domid 3)
    (name guest1)
    (image
        (linux
            (kernel /boot/vmlinuz-2.6.18-xen)
            (args 'root=/dev/xvda1 ro console=hvc0')
        )
    )
    (state -b----)
    (device (vbd (uname phy:/dev/vg0/guest1) (dev xvda) (mode w)))
)
"""


def test_prettyprint_of_a_short_list_is_one_line():
    assert sxp.prettyprint(["a", ["b", "c d"]]) == "(a (b 'c d'))\n"


# -- helpers (§2.7) ------------------------------------------------------------------------------------
CONFIG = ["xend-config", ["logfile", "/tmp/x.log"], ["network-script"], ["loglevel", "INFO", "x"],
          "stray", ["logfile", "/second"], ["xen-api-server", [["unix"]]]]
WITH_ATTRS = ["vm", ["@", ["id", "7"], ["k"]], ["name", "a"], "text", ["name", "b"]]


def test_name():
    assert sxp.name("abc") == "abc"
    assert sxp.name(["abc", "x"]) == "abc"
    assert sxp.name([]) is None
    assert sxp.name(None) is None


def test_attributes_and_attribute():
    assert sxp.attributes(WITH_ATTRS) == [["id", "7"], ["k"]]
    assert sxp.attributes(CONFIG) == []
    assert sxp.attribute(WITH_ATTRS, "id") == "7"
    assert sxp.attribute(WITH_ATTRS, "k", "dflt") == "dflt"
    assert sxp.attribute(WITH_ATTRS, "missing", "dflt") == "dflt"


def test_children_skip_the_name_and_the_attribute_list():
    assert sxp.children(WITH_ATTRS) == [["name", "a"], "text", ["name", "b"]]
    assert sxp.children(WITH_ATTRS, "name") == [["name", "a"], ["name", "b"]]
    assert sxp.children(CONFIG, "logfile") == [["logfile", "/tmp/x.log"], ["logfile", "/second"]]
    assert sxp.children("atom") == []
    assert sxp.children([]) == []


def test_child_is_the_first_child_list_with_that_name():
    assert sxp.child(CONFIG, "logfile") == ["logfile", "/tmp/x.log"]
    assert sxp.child(CONFIG, "stray") is None          # atoms are not elements
    assert sxp.child(CONFIG, "missing", "dflt") == "dflt"


def test_child_value_first_occurrence_empty_and_missing():
    assert sxp.child_value(CONFIG, "logfile") == "/tmp/x.log"          # first occurrence wins
    assert sxp.child_value(CONFIG, "network-script", "dflt") == "dflt"  # (NAME) -> default
    assert sxp.child_value(CONFIG, "loglevel") == "INFO"               # extra items ignored
    assert sxp.child_value(CONFIG, "xen-api-server") == [["unix"]]     # nested list as is
    assert sxp.child_value(CONFIG, "missing") is None
    assert sxp.child_value(CONFIG, "missing", "dflt") == "dflt"


def test_child_at_and_child0():
    assert sxp.child0(CONFIG) == ["logfile", "/tmp/x.log"]
    assert sxp.child_at(CONFIG, 3) == "stray"
    assert sxp.child_at(CONFIG, 99, "dflt") == "dflt"


def test_elementp():
    assert sxp.elementp(["a"]) and sxp.elementp(["a", "b"], "a")
    assert not sxp.elementp([]) and not sxp.elementp("a") and not sxp.elementp(["a"], "b")


def test_elements_walks_in_pre_order():
    tree = ["a", ["b", ["c"]], ["d"]]
    assert [sxp.name(n) for n, _ in sxp.elements(tree)] == ["a", "b", "c", "d"]


def test_merge_keeps_the_first_fields():
    merged = sxp.merge(["vm", ["name", "a"], ["memory", "256"]],
                       ["vm", ["name", "b"], ["vcpus", "2"]])
    assert sxp.child_value(merged, "name") == "a"
    assert sxp.child_value(merged, "memory") == "256"
    assert sxp.child_value(merged, "vcpus") == "2"


def test_from_string_gives_the_first_value():
    assert sxp.from_string("(a) (b)") == ["a"]
    assert sxp.all_from_string("(a) (b)") == [["a"], ["b"]]


# -- real files ---------------------------------------------------------------------------------------
def test_every_real_xend_config_file_parses(shared_fixtures):
    files = sorted((shared_fixtures / "xend-config").glob("**/*.sxp"))
    assert files
    for path in files:
        values = sxp.parse_file(str(path))
        assert all(isinstance(v, (str, list)) for v in values), path
