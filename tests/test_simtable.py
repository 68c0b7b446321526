"""The simulated hypervisor's in-memory domain table (xend.hypervisor.simtable): what it
writes is the document, a refused change leaves everything as it was, readers keep the
records they took."""
import json

import pytest

from xend.hypervisor.simtable import DomainTable, copy_record


def record(domid, mem=1024, **extra):
    rec = {"domid": domid, "name": f"d{domid}", "mem_kib": mem, "since": None,
           "request": None, "run_s": 0.0, "vcpu_ns": [0], "knobs": {"crash_after": 0,
                                                                     "ignore_shutdown": False,
                                                                     "shutdown_delay": 0.3}}
    rec.update(extra)
    return rec


def doc(*domids):
    return {"format": 1, "serial": 0, "next_domid": 1, "host": {"memory_kib": 1 << 20},
            "domains": [record(d) for d in domids]}


def written(table):
    return json.loads(b"".join(table.commit()))


def test_commit_writes_the_document_with_changed_records():
    table = DomainTable(doc(0, 1, 2))
    table.begin()
    table.own(1)["mem_kib"] = 4096
    table.doc["serial"] += 1
    out = written(table)
    assert out == json.loads(json.dumps(table.doc))
    assert [r["mem_kib"] for r in out["domains"]] == [1024, 4096, 1024]
    assert table.used_kib == 1024 + 4096 + 1024


def test_records_are_copied_on_write():
    table = DomainTable(doc(0, 1))
    held = table.index[1]
    table.begin()
    mine = table.own(1)
    mine["vcpu_ns"][0] = 99
    mine["knobs"]["crash_after"] = 5
    table.commit()
    assert held["vcpu_ns"] == [0] and held["knobs"]["crash_after"] == 0
    assert table.index[1] is mine and table.records[1] is mine


def test_insert_keeps_domid_order_and_remove_drops():
    table = DomainTable(doc(0, 5))
    table.begin()
    table.insert(record(9))
    table.insert(record(3))                 # below the highest id
    table.remove(5)
    out = written(table)
    assert [r["domid"] for r in out["domains"]] == [0, 3, 9]
    assert table.used_kib == 3 * 1024
    assert [r["domid"] for r in table.records] == [0, 3, 9]


def test_rollback_undoes_records_and_own_fields():
    table = DomainTable(doc(0, 1, 2))
    before = json.loads(b"".join(_fresh_commit(table)))
    originals = list(table.records)
    table.begin()
    table.own(1)["mem_kib"] = 1
    table.insert(record(7))
    table.remove(2)
    table.doc["next_domid"] = 8
    table.doc["host"]["memory_kib"] = 5
    table.rollback()
    assert table.records == originals and all(a is b for a, b in zip(table.records, originals))
    assert sorted(table.index) == [0, 1, 2]
    table.begin()
    assert written(table) == before
    assert table.used_kib == 3 * 1024


def _fresh_commit(table):
    table.begin()
    return table.commit()


def test_due_times_follow_changes():
    table = DomainTable(doc(0, 1))
    assert table.due_times() == []
    table.begin()
    rec = table.own(1)
    rec["since"] = 100.0
    rec["knobs"]["crash_after"] = 10
    table.commit()
    assert table.due_times() == [110.0]
    table.begin()
    table.remove(1)
    table.commit()
    assert table.due_times() == []


def test_no_nested_transaction():
    table = DomainTable(doc(0))
    table.begin()
    with pytest.raises(RuntimeError):
        table.begin()


def test_copy_record_is_deep():
    rec = {"a": [1, {"b": [2]}], "c": "x"}
    copy = copy_record(rec)
    copy["a"][1]["b"].append(3)
    assert rec == {"a": [1, {"b": [2]}], "c": "x"}


def test_unlocked_reads_only_committed_state():
    table = DomainTable(doc(0, 1))
    assert table.unlocked(lambda t: t.index[1]["mem_kib"]) == (True, 1024)
    table.begin()
    table.own(1)["mem_kib"] = 2048
    assert table.unlocked(lambda t: t.index[1]["mem_kib"]) == (False, None)
    table.commit()

    def changed_meanwhile(t):
        t.begin()
        t.rollback()
        return 1
    assert table.unlocked(changed_meanwhile) == (False, 1)
    assert table.unlocked(lambda t: t.used_kib) == (True, 1024 + 2048)
