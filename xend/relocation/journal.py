"""A record of migrations in progress, so that a xend killed in the middle of one can put
things right when it starts again.

One small JSON file per migration in ``<xend-state-path>/relocation/``, written atomically
and synced before the step it protects:

* ``outgoing-<uuid>``: we are sending that domain. Phase ``streaming`` until the receiver
  confirmed, then ``confirmed`` until our copy is destroyed. At start: ``streaming`` -> our copy
  is resumed under its own name; ``confirmed`` -> the destination has it, our copy is
  destroyed.
* ``incoming-<uuid>``: we are receiving it; written once its configuration has been read,
  before the domain is built, removed once the sender has our ``(ok)`` or the domain is gone.
  At start: a domain of that uuid that is still paused was never finished -> destroyed.
"""
from __future__ import annotations

from xend import journal


class Journal(journal.Journal):
    KINDS = ("incoming", "outgoing")
