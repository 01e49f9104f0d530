"""Reading the documentation as tests need it: its documents, shell commands, example files and links."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# docs/ in reading order, which is also the order tests/test_readme.py runs their commands in: a
# command that needs an earlier command's run folder (evaluate, resume) comes after it.
DOCS_ORDER = ("configs.md", "own-images.md", "vision-tasks.md", "large-data.md", "tracking.md", "search.md",
              "after-training.md", "resume.md", "techniques.md", "own-code.md", "tasks.md", "precision.md", "distributed.md", "speed.md",
              "testing.md", "architecture.md")


def documents() -> list[Path]:
    """README.md, then the files of docs/ in DOCS_ORDER."""
    return [README] + [DOCS / name for name in DOCS_ORDER]


def shell_commands() -> list[tuple[str, str]]:
    """(document, command) for every command of the documents' ```bash blocks, in reading order.

    The document is named relative to the repository root (`docs/resume.md`).
    """
    return [(str(document.relative_to(ROOT)), command)
            for document in documents() for command in commands_in(document.read_text())]


def commands_in(text: str) -> list[str]:
    """Every command of the ```bash blocks of `text`, in order.

    Continued lines (a trailing backslash) are joined; comments (`#` outside quotes) and
    surrounding blanks are dropped, so the command is exactly what the shell runs.
    """
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            command = _without_comment(line).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


def example_files() -> dict[str, str]:
    """The files of the documents' worked examples: a block introduced by a line "`NAME`: ...".

    NAME is a relative path ending in .py or .yaml; the block right after it is the file's content.
    """
    pattern = r"^`([\w/]+\.(?:py|yaml))`:[^\n]*\n(?:[^\n]+\n)*\n```(?:python|yaml)\n(.*?)^```"
    files: dict[str, str] = {}
    for document in documents():
        for name, content in re.findall(pattern, document.read_text(), flags=re.DOTALL | re.MULTILINE):
            if name in files:
                raise ValueError(f"{document.relative_to(ROOT)}: the example file {name} is written twice; "
                                 "rename one")
            files[name] = content
    return files


def write_example_files(folder: Path) -> list[str]:
    """Writes the example files under `folder`; returns their names."""
    files = example_files()
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    return sorted(files)


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links in `text` that point into the repository (no scheme)."""
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(text))
            if not re.match(r"[a-z]+:", target)]


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of `text`: lower case, punctuation dropped, blanks as `-`."""
    headings = re.findall(r"^#+ (.+)$", _without_code(text), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def _without_code(text: str) -> str:
    """`text` without its fenced blocks and inline code, whose brackets and `#` lines are not Markdown."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`]*`", "", text)


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
