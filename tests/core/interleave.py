"""Another thread's step, run at a chosen call: how the tests of the receive without the
lock (core/channel.py, core/inbox.py) put one where the interpreter may switch threads."""

from __future__ import annotations

import dis
from collections.abc import Callable


class RunsAStepOnce:
    """Mixed into a message, a list or a queue whose hook (``len()``, iteration) stands
    for a call inside the code under test: the hook runs ``step`` the first time."""

    step: Callable[[], object] | None = None

    def run_step(self) -> None:
        step, self.step = self.step, None
        if step is not None:
            step()


#: Instructions after which CPython may hand the interpreter lock to another thread (and
#: run signal handlers): calls, backward jumps. A function's start is one too, but the
#: windows checked below lie inside one function.
SWITCH_POINTS = ("CALL", "PRECALL", "JUMP_BACKWARD", "POP_JUMP_BACKWARD")


def switch_points_before_pops(func: Callable[..., object]) -> list[list[str]]:
    """For each ``popleft`` called in ``func``: the switch points between the last look at
    ``head`` (a load of it that a conditional jump tests) and that call. A pop with no
    look before it in the function is left out."""
    code = list(dis.get_instructions(func))
    windows = []
    for i, ins in enumerate(code):
        if _loads_last(ins) != "popleft":
            continue
        after = code[i + 2] if code[i + 1].opname == "PUSH_NULL" else code[i + 1]  # 3.13
        if not after.opname.startswith(("PRECALL", "CALL")):
            continue  # not a pop (``popleft = head.popleft`` keeps the method for later)
        for j in range(i - 1, -1, -1):
            if _loads_last(code[j]) == "head" and _tests(code, j + 1):
                windows.append([x.opname for x in code[j:i]
                                if x.opname.startswith(SWITCH_POINTS)])
                break
    return windows


def _tests(code: list[dis.Instruction], k: int) -> bool:
    """Whether the value loaded just before ``code[k]`` is tested by a conditional jump
    there (through a conversion to bool, from CPython 3.13)."""
    if code[k].opname == "TO_BOOL":
        k += 1
    return "JUMP" in code[k].opname and "IF" in code[k].opname


def _loads_last(ins: dis.Instruction) -> object:
    """The name an instruction loads last (CPython 3.13 loads two locals in one)."""
    if not ins.opname.startswith("LOAD"):
        return None
    return ins.argval[-1] if isinstance(ins.argval, tuple) else ins.argval
