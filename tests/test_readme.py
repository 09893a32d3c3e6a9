"""The README's library example runs as written and its student learns."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["count_parameters"](namespace["student"]) == 1210
    assert namespace["history"][-1]["accuracy"] > 0.8
