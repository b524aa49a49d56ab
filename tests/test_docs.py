"""The README and docs/ hold together: a short README with a contents list, links that reach
their files and headings, and documented commands that the real parsers accept.

Fast: nothing is run; ``fgdepth`` commands go through ``build_parser().parse_args`` only.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from fgdepth.app.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 300

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the text may run over a line break
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`([^`]+)`")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---------------------------------------------------------------------------------------------
# Markdown: prose and code apart, headings, anchors


def split_markdown(text: str) -> tuple[str, list[str]]:
    """(the prose with fenced code blocks blanked out, the fenced blocks' bodies)."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if block is None:
                block = []
            else:
                blocks.append("\n".join(block))
                block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped,
    spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file (repeats get -1, -2, ... as on GitHub)."""
    prose, _ = split_markdown(path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        base = anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    """Link targets in the prose (code blocks and inline code left out)."""
    prose, _ = split_markdown(path.read_text())
    prose = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)
    return LINK.findall(prose)


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target))  # http:, https:, mailto:, ...


# ---------------------------------------------------------------------------------------------
# The README: short, and a contents list at its top


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) < MAX_README_LINES, f"README.md has {len(lines)} lines"


def contents_links(path: Path) -> list[str]:
    """The links of the list under the first heading named Contents."""
    prose, _ = split_markdown(path.read_text())
    lines = prose.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"^#{1,6}\s+contents\s*$", line, re.I)),
        None,
    )
    assert start is not None, f"{_rel(path)}: no 'Contents' heading"
    targets = []
    for line in lines[start + 1 :]:
        if HEADING.match(line):
            break
        targets += LINK.findall(line)
    return targets


def test_the_readme_opens_with_a_contents_list_of_its_own_headings():
    prose, _ = split_markdown(README.read_text())
    headings = [line for line in prose.splitlines() if HEADING.match(line)]
    assert re.match(r"^#{1,6}\s+contents\s*$", headings[1], re.I), (
        "the contents list should follow the title"
    )
    targets = contents_links(README)
    own = [t for t in targets if t.startswith("#")]
    assert len(own) >= 6, targets
    missing = [t for t in own if t[1:] not in anchors(README)]
    assert not missing, f"contents entries with no such heading: {missing}"
    # the list names every second-level section, in the README's order
    sections = [
        "#" + anchor(line[3:])
        for line in prose.splitlines()
        if line.startswith("## ") and anchor(line[3:]) != "contents"
    ]
    assert own == sections


# ---------------------------------------------------------------------------------------------
# Links between the pages


def test_every_relative_link_reaches_a_file_and_heading_that_exist():
    bad = []
    for page in PAGES:
        for target in links(page):
            if is_external(target):
                continue
            file_part, _, frag = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                bad.append(f"{_rel(page)}: {target}: no such file")
            elif frag and dest.suffix == ".md" and frag not in anchors(dest):
                bad.append(f"{_rel(page)}: {target}: no heading '#{frag}' in {_rel(dest)}")
    assert not bad, "\n".join(bad)


def test_the_anchor_rule():
    assert anchor("The study at the `cpu` profile") == "the-study-at-the-cpu-profile"
    assert anchor("A team's tracking server") == "a-teams-tracking-server"
    assert anchor("Several GPUs or machines (DDP)") == "several-gpus-or-machines-ddp"
    assert anchor("Train, evaluate, predict") == "train-evaluate-predict"


# ---------------------------------------------------------------------------------------------
# Commands in the docs: where they are and how they are written

# Placeholders the docs write in capitals, and a value of the right kind for each.
PLACEHOLDERS = {
    "RUN_ID": "0123456789abcdef",
    "PATH": "data/synth",
    "DIR": "outputs/x",
    "FILE": "optuna.log",
    "NAME": "default",
    "STUDY": "default-cpu-cefab434",
    "PROFILE": "cpu",
    "KEY": "lr",
    "VALUE": "0.01",
    "ALIAS": "champion",
    "HOST": "localhost",
    "N": "2",
    "M": "1",
}
PLACEHOLDER = re.compile(r"\b(" + "|".join(sorted(PLACEHOLDERS, key=len, reverse=True)) + r")\b")
# Where a command ends, outside quotes and [optional] groups: a `#` comment, a pipe, `&&`, `;`
# or a redirection. A `|` with no spaces around it is a choice (`smoke|cpu|full`), not a pipe.


def cut(command: str) -> str:
    """The command up to the first shell operator outside quotes and [ ] groups."""
    depth, quote = 0, None
    for i, ch in enumerate(command):
        before = command[i - 1] if i else " "
        after = command[i + 1] if i + 1 < len(command) else " "
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif depth == 0 and (
            (ch == "#" and before.isspace())
            or (ch == "|" and before.isspace() and after.isspace())
            or command.startswith("&&", i)
            or ch in ";>"
        ):
            return command[:i].strip()
    return command.strip()


def parse_template(text: str, i: int = 0, stop: str = "") -> tuple[list, int]:
    """A command as the docs write it -> a list of strings and optional groups: ``[x]`` is an
    optional group of one alternative, ``[a | b]`` of two."""
    seq, buf = [], []
    while i < len(text) and text[i] not in stop:
        ch = text[i]
        if ch in "'\"":  # a quoted string stays whole, brackets and bars in it included
            end = text.find(ch, i + 1)
            end = len(text) - 1 if end < 0 else end
            buf.append(text[i : end + 1])
            i = end + 1
        elif ch == "[":
            seq.append("".join(buf))
            buf, alternatives = [], []
            i += 1
            while True:
                alt, i = parse_template(text, i, stop="|]")
                alternatives.append(alt)
                if i >= len(text) or text[i] == "]":
                    break
                i += 1  # past the |
            seq.append(_share_option(alternatives))
            i += 1  # past the ]
        else:
            buf.append(ch)
            i += 1
    seq.append("".join(buf))
    return seq, i


def _share_option(alternatives: list) -> list:
    """``[--storage a | b | c]``: the later alternatives are values of the first one's option."""
    first = alternatives[0][0].split() if isinstance(alternatives[0][0], str) else []
    if len(first) >= 2 and first[0].startswith("-"):
        for alt in alternatives[1:]:
            if isinstance(alt[0], str) and not alt[0].strip().startswith("-"):
                alt[0] = f"{first[0]} {alt[0].strip()}"
    return alternatives


def _groups(seq: list) -> list:
    """Every optional group of a template, nested ones included."""
    found = []
    for item in seq:
        if isinstance(item, list):
            found.append(item)
            for alt in item:
                found += _groups(alt)
    return found


def render(seq: list, pick: dict) -> str:
    """The template with each group's choice made: ``pick[id(group)]`` is an alternative's
    index, or None to leave the group out; by default the first alternative."""
    out = []
    for item in seq:
        if isinstance(item, list):
            k = pick.get(id(item), 0)
            if k is not None:
                out.append(render(item[k], pick))
        else:
            out.append(item)
    return "".join(out)


def variants(command: str) -> list[str]:
    """The command with every optional group in (each alternative tried once), and with every
    optional group left out; a word ``a|b|c`` gives one command per choice."""
    seq, _ = parse_template(command)
    groups = _groups(seq)
    picks = [{}]
    picks += [{id(g): k} for g in groups for k in range(1, len(g))]
    picks.append({id(g): None for g in groups})
    found = []
    for pick in picks:
        for text in _bare_choices(render(seq, pick)):
            if text not in found:
                found.append(text)
    return found


def _bare_choices(text: str) -> list[str]:
    """``--profile smoke|cpu|full`` -> one command per choice (a word with a bar and no quotes;
    a choice ``...`` stands for "and others" and is left out)."""
    options = []
    for word in text.split():
        if "|" in word and not re.search(r"['\"]", word):
            options.append([w for w in word.split("|") if w and w != "..."])
        else:
            options.append([word])
    longest = max((len(o) for o in options), default=1)
    return [" ".join(o[min(k, len(o) - 1)] for o in options) for k in range(longest)]


def code_spans(path: Path) -> list[str]:
    """Shell text of a page: each fenced block's lines (joined over trailing backslashes) and
    each inline code span (joined over its line breaks)."""
    prose, blocks = split_markdown(path.read_text())
    spans = []
    for block in blocks:
        spans += re.sub(r"\\\n\s*", " ", block).splitlines()
    for paragraph in re.split(r"\n\s*\n", prose):
        spans += [" ".join(m.split()) for m in INLINE_CODE.findall(paragraph)]
    return spans


def commands(prefix: str) -> list[tuple[str, str]]:
    """(page, command) for each command of the docs that starts with ``prefix`` (a regex) at
    the start of a line, span or `&&` / `;` segment (after ``VAR=value`` words), or after
    ``-m`` (``torchrun ... -m fgdepth train ...``)."""
    start = re.compile(rf"(?:^|\s-m\s+)(?:\w+=\S+\s+)*({prefix}(?=\s|$).*)")
    found = []
    for page in PAGES:
        for span in code_spans(page):
            for segment in re.split(r"&&|;", span):
                m = start.search(segment.strip())
                if m:
                    found.append((_rel(page), cut(m.group(1))))
    return found


# ---------------------------------------------------------------------------------------------
# fgdepth commands parse

SUBCOMMANDS = {"synth", "data", "inspect", "pack", "train", "study", "tune", "predict",
               "report", "evaluate"}  # fmt: skip


def fill(text: str) -> str:
    """Placeholders (whole capitalised words) replaced by values that parse."""
    return PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], text)


def fgdepth_argvs() -> list:
    """(page, command, argv) for each variant of each documented ``fgdepth`` command.

    Skipped, because they name a command rather than give one:
    - ``fgdepth`` alone, or ``fgdepth train`` / ``fgdepth data inspect`` with nothing after
      the subcommand (a mention in prose, e.g. "`fgdepth evaluate` scores the model");
    - a command with a literal ``...`` word standing for "the rest of the command" (e.g.
      ``fgdepth tune ... --storage postgresql://...``): what it stands for is not written.
    """
    out = []
    for page, command in commands(r"(?:python\s+-m\s+)?fgdepth"):
        command = re.sub(r"^python\s+-m\s+", "", command)
        for variant in variants(command):
            argv = shlex.split(fill(variant))[1:]
            if "..." in argv or all(w in SUBCOMMANDS for w in argv):
                continue
            out.append(pytest.param(page, command, argv, id=f"{page}: {' '.join(argv)}"))
    return out


def test_the_docs_give_fgdepth_commands():
    assert len(fgdepth_argvs()) >= 30


@pytest.mark.parametrize("page, command, argv", fgdepth_argvs())
def test_a_documented_fgdepth_command_parses(page, command, argv):
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{page}: `{command}` does not parse as {argv} (exit {exc.code})")


# ---------------------------------------------------------------------------------------------
# mlflow run commands name real entry points and parameters


def mlflow_runs() -> list:
    """(page, command, the words after ``mlflow run``) for each variant of each command."""
    out = []
    for page, command in commands(r"mlflow\s+run"):
        for variant in variants(command):
            args = shlex.split(fill(variant))[2:]
            if not args:  # `mlflow run` alone names the command ("under `mlflow run`, ...")
                continue
            out.append(pytest.param(page, command, args, id=f"{page}: {' '.join(args)}"))
    return out


def test_the_docs_give_mlflow_run_commands():
    assert len(mlflow_runs()) >= 5


@pytest.mark.parametrize("page, command, args", mlflow_runs())
def test_a_documented_mlflow_run_names_an_entry_point_and_its_parameters(page, command, args):
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    entry, params = "main", []
    words = iter(args)
    for word in words:
        if word in ("-e", "--entry-point"):
            entry = next(words)
        elif word in ("-P", "--param-list"):
            params.append(next(words))
        elif word.startswith("-P") and len(word) > 2:
            params.append(word[2:])
    assert entry in entry_points, f"{page}: `{command}`: no entry point '{entry}' in MLproject"
    declared = entry_points[entry].get("parameters") or {}
    for param in params:
        key = param.partition("=")[0]
        assert key in declared, (
            f"{page}: `{command}`: entry point '{entry}' has no parameter '{key}' "
            f"(it has {', '.join(declared)})"
        )


def test_the_template_reading():
    def plain(command):
        return [" ".join(v.split()) for v in variants(command)]

    assert plain("fgdepth train [--profile smoke|cpu|full] [--seed N]") == [
        "fgdepth train --profile smoke --seed N",
        "fgdepth train --profile cpu --seed N",
        "fgdepth train --profile full --seed N",
        "fgdepth train",
    ]
    assert plain("fgdepth tune [--storage a | b] [--x]") == [
        "fgdepth tune --storage a --x",
        "fgdepth tune --storage b --x",
        "fgdepth tune",
    ]
    assert plain("fgdepth report [--experiment NAME[,NAME...]]")[0] == (
        "fgdepth report --experiment NAME,NAME..."
    )
    assert cut("fgdepth train --resume RUN_ID   # or --resume latest") == (
        "fgdepth train --resume RUN_ID"
    )
    assert cut("fgdepth data inspect PATH | jq . > out.json") == "fgdepth data inspect PATH"
    assert cut("fgdepth x [--storage a | b] && ls") == "fgdepth x [--storage a | b]"
    assert cut("fgdepth x --set 'a=b; c' ; ls") == "fgdepth x --set 'a=b; c'"


def test_placeholders_are_whole_words():
    assert fill("runs:/RUN_ID/model --seed N") == "runs:/0123456789abcdef/model --seed 2"
    assert fill("NAMES MODEL N2") == "NAMES MODEL N2"
