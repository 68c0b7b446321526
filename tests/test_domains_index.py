"""xend.domains.index: the domains by name, uuid and domid follow the domains' changes."""
from xend.domains.config import parse_config
from xend.domains.domain import Domain
from xend.domains.index import DomainIndex

UUID = "11111111-2222-3333-4444-555555555555"


def make(name, uuid=UUID, domid=None):
    cfg = parse_config(["vm", ["name", name], ["uuid", uuid], ["memory", "16"],
                        ["image", ["linux", ["kernel", "/k"]]]], 1)
    return Domain(None, cfg, domid=domid)


def test_lookup_follows_renames_and_domids():
    index = DomainIndex()
    a, b = make("a", domid=3), make("b", "22222222-2222-3333-4444-555555555555")
    for d in (a, b):
        index.add(d)
        d.keys_changed = index.add
    assert index.having("name", "a") == [a]
    assert index.having("domid", 3) == [a]
    a.config = a.config.replace(name="renamed")
    a.domid = 7
    assert index.having("name", "a") == [] and index.having("name", "renamed") == [a]
    assert index.having("domid", 3) == [] and index.having("domid", 7) == [a]
    index.discard(b)
    assert index.having("name", "b") == []


def test_twins_come_oldest_first():
    index = DomainIndex()
    first, second = make("mv", domid=1), make("mv", domid=2)
    for d in (second, first):
        index.add(d)
    assert index.having("uuid", UUID) == [first, second]


def test_rebuild_when_stale_entries_pile_up():
    index = DomainIndex()
    d = make("x", domid=1)
    d.keys_changed = index.add
    index.add(d)
    for domid in range(2, 3000):
        d.domid = domid
    assert index.needs_rebuild(1)
    index.rebuild([d])
    assert not index.needs_rebuild(1)
    assert index.having("domid", 2999) == [d] and index.having("domid", 5) == []
