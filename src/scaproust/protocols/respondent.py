"""RESPONDENT: answer a SURVEYOR's surveys (tables: machines ``respondent_raw`` and
``respondent`` in protocols.yaml).

Theory of operation
-------------------
Like REP (WIRE.md, "RESPONDENT"): a survey's backtrace is split off and kept under the id
of the pipe it came on, and the response is routed back by it. The machines share REP's
actions (protocols/_backtrace.py), which say what happens to every kind of input.

The raw and the cooked machine have the same table and the same class: the cooked socket
differs only in its policy, ``RespondentPolicy``, which keeps the header of the
survey being answered and puts it on the response: a send with no survey pending raises
``sp.BadState``, and a new recv abandons an unanswered survey. It is REP's policy.

Extra fields: see _backtrace.py.

Contexts (machine ``respondent_ctx``): REP's (protocols/rep.py), answering surveys.
"""

from __future__ import annotations

from scaproust._generated.respondent import RespondentFSM
from scaproust._generated.respondent_ctx import RespondentCtxFSM
from scaproust._generated.respondent_raw import RespondentRawFSM
from scaproust.protocols._backtrace import BacktraceRouter
from scaproust.protocols.rep import RepContext, RepContextPolicy, RepPolicy


class RespondentRaw(RespondentRawFSM, BacktraceRouter):
    """Raw RESPONDENT protocol machine (the cooked one only swaps the table)."""


class Respondent(RespondentFSM, RespondentRaw):
    """Cooked RESPONDENT protocol machine: the raw one; see RespondentPolicy."""


class RespondentPolicy(RepPolicy):
    """A cooked RESPONDENT's user-visible state is a cooked REP's: the survey being
    answered (its pipe word and backtrace); send() without one is sp.BadState."""

    unanswerable = "a RESPONDENT socket sends a response only to a survey it has recv()ed"


class RespondentContext(RespondentCtxFSM, RepContext):
    """One RESPONDENT context (machine ``respondent_ctx``): REP's, for surveys."""

    kind = "RESPONDENT"
    question = "survey"


class RespondentContextPolicy(RepContextPolicy):
    """A RESPONDENT context's caller-side half: REP's, with its own machine."""

    machine_class = RespondentContext
