"""The legacy XML-RPC response writer (xend.server.xmlrpc_wire) and the records it caches
(xend.domains.config.RecordCache): what a client reads is what xmlrpc.client.dumps of
to_wire's result gives."""
from __future__ import annotations

import xmlrpc.client

import pytest

from xend import sxp
from xend.domains.config import RecordCache, Runtime, parse_config, to_record
from xend.server.xmlrpc import to_wire
from xend.server.xmlrpc_wire import dumps_response
from xend.xm.client import fast_loads

from tests.test_domains_support import env as shared_env
from tests.test_domains_support import started, vm

env = shared_env

VALUES = [
    "plain", "", "a <b> & c", 0, -5, 2 ** 31 - 1, 2 ** 31, -(2 ** 40), 1.5, -0.25, True, False,
    None, [], ["domain", ["name", "g1"], ["memory", 256], ["vcpu_avail", 2 ** 63 - 1]],
    ("t", 1), {"k": 2 ** 33, "b": [1, "x"], 3: None},
    [["vcpu_avail", 1], ["x", [["vcpu_avail", 3], "deep"]]],
    xmlrpc.client.Binary(b"\x00\x01bin"), b"raw", "unicode \u00e9\u4e2d",
]


def stdlib(value):
    text = xmlrpc.client.dumps((to_wire(value),), methodresponse=True, allow_none=True)
    return xmlrpc.client.loads(text, use_builtin_types=False)


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_what_a_client_reads_is_what_the_stdlib_writes(value):
    ours = dumps_response(value)
    assert xmlrpc.client.loads(ours, use_builtin_types=False) == stdlib(value)
    fast = fast_loads(ours)
    if fast is not None:                # xm's own parser (not for base64)
        assert fast == stdlib(value)[0]


def test_what_xmlrpc_cannot_carry_is_refused():
    with pytest.raises(TypeError):
        dumps_response([object()])


def test_a_frozen_list_is_written_once():
    field = sxp.Frozen(["name", "g1"])
    first = dumps_response(["domain", field])
    assert field.encoded == "<value><array><data><value>name</value><value>g1</value>" \
                            "</data></array></value>"
    field.encoded = "<value>kept</value>"
    assert xmlrpc.client.loads(dumps_response(["domain", field]))[0][0] == ["domain", "kept"]
    assert xmlrpc.client.loads(first)[0][0] == ["domain", ["name", "g1"]]
    assert dumps_response([sxp.Frozen(["vcpu_avail", 2 ** 40])]) == dumps_response([])


@pytest.mark.parametrize("full", [False, True])
def test_cached_records_are_to_record(full):
    cfg = parse_config(["vm", ["name", "g1"], ["memory", "64"], ["vcpus", "2"],
                        ["vcpu_avail", "1"], ["description", "d"], ["extra_key", "x"],
                        ["image", ["linux", ["kernel", "/k"], ["args", "a"]]],
                        ["device", ["vbd", ["uname", "file:/d"], ["dev", "xvda"]]],
                        ["device", ["vif", ["mac", "00:16:3e:00:00:01"]]]], 4)
    cache = RecordCache()
    for rt in (Runtime(), Runtime(domid=3, status=2, state="r-----", start_time=1.5,
                                  cpu_time=2.0, online_vcpus=1)):
        assert cache.record(cfg, rt, full) == to_record(cfg, rt, full)
    again = cache.record(cfg, Runtime(domid=4), full)
    assert again[2] is cache.record(cfg, Runtime(), full)[1]    # the same field objects
    renamed = cfg.replace(name="g2")
    assert cache.record(renamed, Runtime(), full) == to_record(renamed, Runtime(), full)


@pytest.mark.timeout(30)
def test_listing_fields_follow_a_config_change(env):
    started(env.reg, vm("g1", memory=8))
    before = env.reg.domain("g1", 1)
    env.reg.domain_setName("g1", "g2")
    after = env.reg.domain("g2", 1)
    assert sxp.child_value(before, "name") == "g1" and sxp.child_value(after, "name") == "g2"
    assert xmlrpc.client.loads(dumps_response(after))[0][0] == stdlib(after)[0][0]
