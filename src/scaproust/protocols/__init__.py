"""The protocols: one module each, ending with its declaration (core/protocol_info.py).

Importing this package declares every protocol; the names below are what ``scaproust``
exports (``sp.Req``), and ``ALL`` lists them in the order the documentation uses.
"""

from scaproust.protocols.bus import BUS as Bus
from scaproust.protocols.pair import PAIR as Pair
from scaproust.protocols.pair1 import PAIR1 as Pair1
from scaproust.protocols.pub import PUB as Pub
from scaproust.protocols.pull import PULL as Pull
from scaproust.protocols.push import PUSH as Push
from scaproust.protocols.rep import REP as Rep
from scaproust.protocols.req import REQ as Req
from scaproust.protocols.respondent import RESPONDENT as Respondent
from scaproust.protocols.sub import SUB as Sub
from scaproust.protocols.surveyor import SURVEYOR as Surveyor

ALL = (Pair, Pair1, Pub, Sub, Req, Rep, Push, Pull, Surveyor, Respondent, Bus)

__all__ = ["Bus", "Pair", "Pair1", "Pub", "Pull", "Push", "Rep", "Req", "Respondent",
           "Sub", "Surveyor"]
