"""
The Python-to-Python example, run as the README says.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python examples/python_calls.py"


class PythonCallsExampleTests(SynchronousTestCase):
    """
    examples/python_calls.py: both sides call and subscribe to each other.
    """

    def test_readme_names_the_command(self) -> None:
        """
        The README gives the command this test runs.
        """
        self.assertIn(COMMAND, (ROOT / "README.md").read_text())

    def test_runs_and_prints_results(self) -> None:
        """
        The example exits 0 and prints each call's result and every update
        of both subscriptions.
        """
        done = subprocess.run(
            [sys.executable, *COMMAND.split()[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        out = done.stdout
        self.assertIn("client: add(2, 3) -> 5", out)
        self.assertIn("server: double(21) -> 42", out)
        self.assertIn("client got tick updates: [1, 2, 3]", out)
        self.assertIn("server got count updates: [1, 2, 3]", out)
        self.assertNotIn("Traceback", done.stderr)
