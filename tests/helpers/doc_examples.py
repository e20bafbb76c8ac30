"""Running the Python blocks of a Markdown file as a reader would, checking what each print shows."""

from __future__ import annotations

import contextlib
import io
import re

# `print(x)  # value: explanation` promises that the line prints exactly `value`.
PROMISE = re.compile(r"^print\(.*\)[ \t]+#[ \t]*(.*)$", flags=re.M)


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def run_blocks(blocks: list[str], namespace: dict, source: str) -> list[tuple[str, str]]:
    """Run the blocks in one namespace; pair each printed line with the value its comment promises."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:  # later blocks continue from earlier ones
            exec(compile(block, source, "exec"), namespace)
    promised = [m.group(1).split(": ")[0].strip() for m in PROMISE.finditer("\n".join(blocks))]
    printed = [line.strip() for line in out.getvalue().splitlines()]
    assert len(printed) == len(promised), (printed, promised)
    return list(zip(printed, promised))
