"""
The txgraphsse test suite: trial test cases, which pytest collects too.
"""
