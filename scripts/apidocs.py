"""
Build the API reference of txgraphsse with pydoctor, warnings as errors.

Usage: .venv/bin/python scripts/apidocs.py [OUTPUT]  (default build/apidocs)

The docstrings are epytext.  Links to Twisted and to Python resolve through
Sphinx inventories made here, offline, so the build needs no network:

  - Twisted's, by pydoctor itself from the installed Twisted (about ten
    seconds, kept in build/intersphinx/ per Twisted version), pointing at
    https://docs.twisted.org/en/stable/api/;
  - Python's, from this interpreter: the builtins (constants, exceptions,
    functions, types) and the standard library's modules, pointing at
    https://docs.python.org/3/.

Exits with pydoctor's status: 0, or non-zero when a docstring has a
warning (a link that does not resolve, an epytext error).
"""

from __future__ import annotations

import builtins
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVENTORIES = REPO / "build" / "intersphinx"
TWISTED_DOCS = "https://docs.twisted.org/en/stable/api/"
PYTHON_DOCS = "https://docs.python.org/3/"

#: Builtin types documented in library/stdtypes.html rather than
#: library/functions.html.
STDTYPES = {
    "bytearray",
    "bytes",
    "dict",
    "frozenset",
    "list",
    "memoryview",
    "range",
    "set",
    "str",
    "tuple",
}


def pydoctor(*args: str) -> list[str]:
    return [sys.executable, "-m", "pydoctor", *args]


def twisted_inventory() -> Path:
    """
    The inventory of the installed Twisted, made once per version.
    """
    import twisted

    path = INVENTORIES / f"twisted-{twisted.__version__}.inv"
    if path.exists():
        return path
    made = INVENTORIES / f"twisted-{twisted.__version__}"
    subprocess.run(
        pydoctor(
            "--make-intersphinx",
            "--project-name=Twisted",
            f"--project-version={twisted.__version__}",
            f"--html-output={made}",
            "--quiet",
            "--quiet",
            str(Path(twisted.__file__).parent),
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (made / "objects.inv").replace(path)
    made.rmdir()
    return path


def python_inventory() -> Path:
    """
    An inventory of Python's builtins and standard modules, in Sphinx's
    format (version 2), made from this interpreter.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = []
    for name in sorted(dir(builtins)):
        if name.startswith("_"):
            continue
        value = getattr(builtins, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            lines.append(f"{name} py:exception 1 library/exceptions.html#$ -")
        elif isinstance(value, type):
            page = "stdtypes" if name in STDTYPES else "functions"
            lines.append(f"{name} py:class 1 library/{page}.html#$ -")
        elif callable(value):
            lines.append(f"{name} py:function 1 library/functions.html#$ -")
        elif name in ("None", "True", "False", "Ellipsis", "NotImplemented"):
            lines.append(f"{name} py:data 1 library/constants.html#$ -")
    for name in sorted(sys.stdlib_module_names):
        if not name.startswith("_"):
            lines.append(f"{name} py:module 0 library/{name}.html#module-$ -")
    head = (
        "# Sphinx inventory version 2\n"
        "# Project: Python\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path = INVENTORIES / f"python-{version}.inv"
    path.write_bytes(head.encode() + zlib.compress("\n".join(lines).encode() + b"\n"))
    return path


def main(argv: list[str]) -> int:
    output = Path(argv[0]) if argv else REPO / "build" / "apidocs"
    INVENTORIES.mkdir(parents=True, exist_ok=True)
    import txgraphsse

    return subprocess.run(
        pydoctor(
            "--project-name=txgraphsse",
            f"--project-version={txgraphsse.__version__}",
            f"--project-base-dir={REPO}",
            "--docformat=epytext",
            f"--html-output={output}",
            f"--intersphinx-file={twisted_inventory()}::{TWISTED_DOCS}",
            f"--intersphinx-file={python_inventory()}::{PYTHON_DOCS}",
            "--warnings-as-errors",
            "--quiet",
            str(REPO / "txgraphsse"),
        ),
        cwd=REPO,
        check=False,
    ).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
