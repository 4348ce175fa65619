"""Every ```python snippet in README.md and docs/ runs as written, from the repository root."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets():
    for page in PAGES:
        if page.exists():
            blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
            for number, code in enumerate(blocks, 1):
                yield pytest.param(code, id=f"{page.name}#{number}")


@pytest.mark.parametrize("code", list(snippets()))
def test_snippet_runs(code, tmp_path):
    # snippets may write files: they get a scratch folder as MICROCONV_SCRATCH
    env = dict(os.environ, PYTHONPATH=str(ROOT), MICROCONV_SCRATCH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
