# -*- test-case-name: tests.test_newcomer,tests.test_tap -*-
"""
The edges of C{twistd graphsse}'s command line that twistd leaves rough.

twistd prints its whole usage text before the message of a
L{usage.UsageError}, and a traceback for anything else that goes wrong
while it makes the service; a port that cannot be had is logged and the
process runs on, serving nothing.  This module owns what the tap does
instead: a bad option ends twistd with one line on stderr and exit status
1 (L{one_line}, L{TwistdOptions}, which also gives C{--version} and
one-paragraph C{--help} texts); an option whose optional package is missing
names the C{pip install} step of its extra (L{require}, L{NEEDS}); a
C{--port} description is an endpoint or a L{usage.UsageError}
(L{server_endpoint}); under twistd the ports are listened on as the service
is made (L{listen_now}), so that a port in use ends the process before
twistd writes its pid file; and the files and modules options name are
read as usage errors would have them (L{read_rsa_key}, L{load_app}).

It knows no option's meaning beyond which extra it needs: the tap, above
it, says which options there are and which ports to listen on.
"""

from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "NEEDS",
    "TwistdOptions",
    "listen_now",
    "load_app",
    "one_line",
    "read_rsa_key",
    "require",
    "server_endpoint",
    "under_twistd",
    "version",
]

#: The optional packages each option needs, and the extra (C{pip install
#: 'txgraphsse[extra]'}) that brings them.
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "--redis": (("txredisapi", "redis"),),
    "--metrics": (("prometheus_client", "metrics"),),
    "--metrics-port": (("prometheus_client", "metrics"),),
    "--jwt-secret": (("jwt", "jwt"),),
    "--jwt-public-key": (("jwt", "jwt"), ("cryptography", "jwt")),
}

#: What a C{--port} description may look like, for its error message.
_PORT_FORMS = (
    "a port number, or a strports description such as"
    " tcp:8080:interface=127.0.0.1 or ssl:8443:privateKey=key.pem:certKey=cert.pem"
)


def version() -> str:
    """
    The line C{twistd graphsse --version} prints.
    """
    import twisted

    from . import __version__

    return (
        f"txgraphsse {__version__} (Twisted {twisted.__version__},"
        f" Python {platform.python_version()})"
    )


def require(option: str) -> None:
    """
    Check that the optional packages C{option} needs (L{NEEDS}) import.

    @raise usage.UsageError: when one does not, naming the extra to install.
    """
    for module, extra in NEEDS[option]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise usage.UsageError(
                f"{option} needs {module}, which cannot be imported ({error}):"
                f" pip install 'txgraphsse[{extra}]'"
            ) from None


def under_twistd(options: usage.Options) -> bool:
    """
    Whether C{options} are a subcommand's, as twistd parses them (it gives
    them its own options as their C{parent}).
    """
    return getattr(options, "parent", None) is not None


@contextmanager
def one_line(options: usage.Options, hint: str = "") -> Iterator[None]:
    """
    Under twistd, a L{usage.UsageError} raised inside ends the process with
    one line on stderr (C{twistd graphsse: <the error><hint>}) and exit
    status 1; called otherwise (by a test, or a program of one's own), the
    error is raised as it is.
    """
    try:
        yield
    except usage.UsageError as error:
        if not under_twistd(options):
            raise
        name = getattr(options.parent, "subCommand", None) or "graphsse"
        raise SystemExit(f"twistd {name}: {error}{hint}") from None


class TwistdOptions(usage.Options):
    """
    L{usage.Options} for a twistd plugin as a newcomer expects them: a bad
    option ends twistd with one line (L{one_line}), C{--version} prints
    txgraphsse's version, and C{--help} shows each option's docstring as one
    paragraph (twistd keeps the indentation of its lines).
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.docs = {
            name: " ".join(doc.split()) if isinstance(doc, str) else doc
            for name, doc in self.docs.items()
        }

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        with one_line(self, " (--help lists the options)"):
            super().parseOptions(options)  # type: ignore[no-untyped-call]

    def opt_version(self) -> None:
        """
        Print the versions of txgraphsse, Twisted and Python, and exit.
        """
        print(version())
        sys.exit(0)


def server_endpoint(
    reactor: Any, description: str, option: str = "--port"
) -> IStreamServerEndpoint:
    """
    The endpoint of a strports C{description}.

    @raise usage.UsageError: when it cannot be made: an unknown type, a
        field that is not a number, a key or certificate file that cannot
        be read, and the like.
    """
    try:
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
        return endpoint
    except Exception as error:
        raise usage.UsageError(
            f"{option} {description}: {error} (give {_PORT_FORMS})"
        ) from None


@implementer(IStreamServerEndpoint)
class _Listened:
    """
    An endpoint already listened on: C{listen} hands back what its own
    C{listen} gave, for the factory it was given then.
    """

    def __init__(self, listening: Deferred[IListeningPort]) -> None:
        self._listening = listening

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._listening


def listen_now(
    endpoint: IStreamServerEndpoint,
    factory: IProtocolFactory,
    description: str,
    option: str = "--port",
) -> IStreamServerEndpoint:
    """
    Listen on C{endpoint} with C{factory} now, and return an endpoint for
    the service that serves it: its C{listen} hands back the port.

    @raise usage.UsageError: when listening fails at once (a port in use,
        an address this host does not have, no permission).  An endpoint
        that answers later fails later, as it would in the service: logged.
    """
    listening = endpoint.listen(factory)
    if not listening.called:
        return _Listened(listening)
    outcome: list[IListeningPort | Failure] = []
    listening.addBoth(outcome.append)
    [result] = outcome
    if isinstance(result, Failure):
        raise usage.UsageError(f"{option} {description}: {result.getErrorMessage()}")
    return _Listened(succeed(result))


def read_rsa_key(name: str, option: str = "--jwt-public-key") -> bytes:
    """
    The RS256 public key in the file C{name} (PyJWT's extra must be there).

    @raise usage.UsageError: when it cannot be read, or holds no RSA key.
    """
    try:
        with open(name, "rb") as file:
            key = file.read()
    except OSError as error:
        raise usage.UsageError(f"{option} {name}: {error.strerror}") from None
    from jwt.algorithms import RSAAlgorithm

    try:
        RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(key)
    except Exception as error:
        raise usage.UsageError(
            f"{option} {name}: not an RSA key in PEM ({error})"
        ) from None
    return key


def load_app(spec: str) -> Any:
    """
    What C{--app module:attr} names: C{attr} (dotted) of the module.

    @raise usage.UsageError: for a spec that is not C{module:attr}, a
        module that does not import, or an attribute it lacks.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage.UsageError(f"--app wants module:attr, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise usage.UsageError(
            f"--app: cannot import {module_name}: {error}"
        ) from error
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise usage.UsageError(f"--app: {module_name} has no {attribute}") from None
    return target
