"""Start-up of a process: the collector paused while the program is built.

Importing crmcore and loading the plugins make a few hundred thousand objects
(modules, classes, functions, SQLAlchemy constructs) that live as long as the
process; the cyclic garbage collector scanned them again and again while they
were being made (70-90 ms, about a tenth of a command's start-up, issue 21).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Whether :func:`building` froze the objects of start-up (so the collector's permanent
#: generation holds some: a caller that would freeze only an empty one need not count it).
frozen = False


@contextmanager
def building() -> Iterator[None]:
    """Pause the cyclic collector for the block, then move every object that exists
    out of its sight (:func:`gc.freeze`): what start-up made is the program, not
    garbage, and scanning it later would only cost time.  Objects made afterwards
    are collected as always; a collector the caller had disabled stays disabled."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        gc.freeze()
        global frozen
        frozen = True
