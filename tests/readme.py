"""Reading the README as tests need it: its shell commands and its example files."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def shell_commands(text: str | None = None) -> list[str]:
    """Every command of the README's ```bash blocks, in order.

    Continued lines (a trailing backslash) are joined; comments (`#` outside quotes) and
    surrounding blanks are dropped, so the command is exactly what the shell runs.
    """
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            command = _without_comment(line).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


def example_files(text: str | None = None) -> dict[str, str]:
    """The files of the README's worked examples: a block introduced by a line "`NAME`: ...".

    NAME is a relative path ending in .py or .yaml; the block right after it is the file's content.
    """
    text = README.read_text() if text is None else text
    pattern = r"^`([\w/]+\.(?:py|yaml))`:[^\n]*\n(?:[^\n]+\n)*\n```(?:python|yaml)\n(.*?)^```"
    return dict(re.findall(pattern, text, flags=re.DOTALL | re.MULTILINE))


def write_example_files(folder: Path) -> list[str]:
    """Writes the example files under `folder`; returns their names."""
    files = example_files()
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    return sorted(files)


def _without_comment(line: str) -> str:
    """`line` up to its comment: a `#` after a blank, outside quotes (`"$(...)"` may hold one)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line
