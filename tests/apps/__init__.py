"""
Applications that the process tests load into C{twistd graphsse} with
C{--app tests.apps.<module>:setup}.
"""
