# -*- test-case-name: tests.test_redis -*-
"""
The private parts of the Redis broker, whose public face is
L{txgraphsse.redis}: for now, its Lua scripts (L{_scripts} and the C{lua/}
files).  Nothing outside the broker imports these modules.
"""
