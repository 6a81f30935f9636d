"""
Derive graphsse.classic.js (a classic script, one global C{GraphSSE}) from the
ES module graphsse.js: drop the C{export} keywords and the default export, and
wrap the rest in a strict IIFE.  The output depends on the input alone, so
C{--check} can tell whether the committed file is stale.

Usage::

    python build_classic.py          # write graphsse.classic.js
    python build_classic.py --check  # exit 1 if it is not what this writes
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "graphsse.js"
TARGET = HERE / "graphsse.classic.js"

_EXPORT = re.compile(r"^export (?=(?:async )?function |class |const |let )")
_DEFAULT = re.compile(r"^export default \w+;$")
_MODULE_ONLY = re.compile(r"^\s*(?:export|import)\b|\bimport\.meta\b")

HEADER = """\
/* graphsse.classic.js: generated from graphsse.js by build_classic.py.
 * Do not edit: change graphsse.js and run `python build_classic.py`.
 * A classic script: it defines one global, GraphSSE (see GraphSSE.openSSE).
 */
var GraphSSE = (function () {
"use strict";

"""

FOOTER = """
return GraphSSE;
})();
"""


def build(source: str) -> str:
    """
    The classic script for the module text C{source}.

    @raise ValueError: if the module uses a form this transformation does not
        know (another kind of export, an import).
    """
    lines = []
    for number, line in enumerate(source.splitlines(), 1):
        if _DEFAULT.match(line):
            continue
        line = _EXPORT.sub("", line, count=1)
        if _MODULE_ONLY.search(line):
            raise ValueError(f"graphsse.js:{number}: cannot convert {line.strip()!r}")
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return HEADER + "\n".join(lines) + "\n" + FOOTER


def main(argv: list[str]) -> int:
    wanted = build(SOURCE.read_text(encoding="utf-8"))
    if argv == ["--check"]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
        if current != wanted:
            print(
                f"{TARGET.name} is stale: run python {Path(__file__).name}",
                file=sys.stderr,
            )
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    with TARGET.open("w", encoding="utf-8", newline="\n") as output:
        output.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
