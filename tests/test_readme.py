"""The README cannot rot: every command in its shell blocks parses with the real CLI parsers, every CLI it names
answers ``--help``, every recipe it names exists, and the Python names it uses are public API."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    """Each shell command of the README as argv (comments and line continuations handled)."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line, comments=True))
    return out


COMMANDS = _commands()


def _parse_pretrain(argv: list[str]) -> None:
    from pretrain.cli import build_parser
    from pretrain.recipes import get_recipe

    args, extra = build_parser().parse_known_args(argv)
    assert all("=" in x for x in extra), extra
    if args.command in ("run", "recipes") and (args.command == "run" or args.name):
        get_recipe(args.recipe if args.command == "run" else args.name, list(args.overrides) + extra)


def _parse_finetune(argv: list[str]) -> None:
    from finetune.cli import build_parser
    from finetune.recipes import get_recipe

    args = build_parser().parse_args(argv)
    assert args.init and args.tasks and args.train, argv
    get_recipe(args.recipe, list(args.overrides))


def _parse_restore(argv: list[str]) -> None:
    sub, rest = argv[0], argv[1:]
    if sub == "run":
        from restore.cli import build_run_parser as build
    elif sub == "eval":
        from tasks.cli import build_parser as build
    elif sub == "convert":
        from restore.convert import build_parser as build
    elif sub == "export":
        from restore.export import build_parser as build
    else:
        raise AssertionError(f"README uses an unknown restore command {sub!r}")
    build().parse_args(rest)


PARSERS = {"pretrain": _parse_pretrain, "finetune": _parse_finetune, "restore": _parse_restore}


def _check(argv: list[str]) -> None:
    prog = argv[0]
    if prog == "make":
        targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert argv[1] in targets, f"make {argv[1]}: no such Makefile target"
    elif prog == "python" and argv[1] == "-m":  # a module with its own parser (e.g. tasks.blind_benchmark)
        import importlib

        importlib.import_module(argv[2]).build_parser().parse_args(argv[3:])
    elif prog in ("deepspeed", "torchrun"):
        i = argv.index("--module") if "--module" in argv else argv.index("-m")
        module = argv[i + 1]
        assert module in ("pretrain.cli", "finetune.cli"), module
        PARSERS[module.split(".")[0]](argv[i + 2 :])
    else:
        assert prog in PARSERS, f"README command {' '.join(argv)!r} is not one of ours"
        PARSERS[prog](argv[1:])


def test_readme_opens_with_the_two_command_quickstart():
    first = _blocks("bash")[0]
    lines = [ln.split("#")[0].strip() for ln in first.strip().splitlines()]
    assert lines == ["make demo", "make test"]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_parses(argv):
    _check(argv)


@pytest.mark.parametrize(
    "argv",
    [["restore", "--help"], ["restore", "run", "--help"], ["restore", "eval", "--help"],
     ["restore", "convert", "--help"], ["pretrain", "--help"], ["pretrain", "shards", "--help"],
     ["pretrain", "run", "--help"], ["pretrain", "export", "--help"], ["finetune", "--help"]],
)
def test_every_cli_named_answers_help(argv, capsys):
    import importlib

    main = importlib.import_module(f"{argv[0]}.cli").main
    with pytest.raises(SystemExit) as exit_:
        code = main(argv[1:])
        raise SystemExit(code)
    assert exit_.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def test_every_cli_in_the_readme_is_covered_by_the_help_test():
    named = {c[0] for c in COMMANDS} - {"make", "deepspeed", "torchrun", "python"}
    assert named <= {"restore", "pretrain", "finetune"}, named


def test_python_names_in_the_readme_exist():
    import restore
    import tasks

    modules = {"restore": restore, "tasks": tasks}
    for block in _blocks("python"):
        for mod, name in re.findall(r"\b(restore|tasks)\.([A-Za-z_]\w*)", block):
            assert hasattr(modules[mod], name), f"README uses {mod}.{name}, which does not exist"
        for attr in re.findall(r"\bmodel\.([A-Za-z_]\w*)\(", block):
            assert hasattr(restore.RestorationModel, attr), f"README uses model.{attr}()"


def test_readme_pictures_exist():
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / path).is_file(), f"README shows {path}, which is not in the repository"
