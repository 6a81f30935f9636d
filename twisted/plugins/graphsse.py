"""
The twistd plugin: C{twistd graphsse}.  All of it lives in L{txgraphsse.tap}.
"""

from twisted.application.service import ServiceMaker

graphsse = ServiceMaker(
    "txgraphsse",
    "txgraphsse.tap",
    "Server-Sent Events with two-way calls (txgraphsse)",
    "graphsse",
)
