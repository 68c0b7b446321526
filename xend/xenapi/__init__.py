"""The Xen-API server: the classes and calls xend 3.0.4-4.4 served on its ``xen-api-server``
listeners, over the same domain registry as the legacy XML-RPC interface.

Written from the Xen-API documentation of the Xen repository at tag RELEASE-4.1.0:
``docs/xen-api/xenapi-datamodel.tex`` (API revision 1.0.10: classes, fields, messages and
error codes) and ``docs/xen-api/wire-protocol.tex`` (results as ``{Status, Value}`` /
``{Status, ErrorDescription}`` structs, 64-bit ints as decimal strings, ``Async.*`` calls
returning tasks). The code is our own; no code of the original xend was used.

Modules, one job each:

* ``config``    the ``xen-api-server`` entries: ``(WHERE [AUTH [HOSTS [KEY CERT]]])``;
* ``errors``    ``XenAPIError`` (an ErrorDescription) and the mapping of xend's errors;
* ``wire``      values and results in the API's wire shapes;
* ``auth``      ``none`` and ``pam`` authentication;
* ``sessions``  logins, their listener and last activity;
* ``store``     what the API keeps that the domains do not (host name, networks, VDIs);
* ``records``   VM, VBD, VIF ... records made from a domain's configuration, and back;
* ``objects``   the generic class machinery: refs, records, getters, setters;
* ``host``, ``vm``, ``devices``, ``metrics``: the classes;
* ``events``    event.register/next/unregister (changes found by comparing snapshots);
* ``tasks``     ``Async.*`` calls and the task class;
* ``service``   the whole API and its dispatcher (one table of method names);
* ``servers``   the unix and TCP (TLS) listeners of the option.
"""
