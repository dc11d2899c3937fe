"""`minimind-tui completion bash|zsh`: a shell completion script generated from the parser.

    eval "$(minimind-tui completion bash)"    # in ~/.bashrc
    eval "$(minimind-tui completion zsh)"     # in ~/.zshrc

It completes the subcommands, every flag (a subcommand's own after its name), the values of
flags that take a fixed set (`--family`, `--dtype`, `--report_to` ..., booleans as 0 and 1,
`runs --sort`) and preset names after `--preset`: the bundled
ones as of generation, the user's read from their folder at each completion (so a preset saved
later completes too), and .toml files. Other values fall back to file names. zsh runs the same
function through its bash compatibility layer (bashcompinit).
"""

from __future__ import annotations

import argparse
import importlib
import shlex

from minimind_tui.cli import exit_codes
from minimind_tui.form.presets import is_user_preset, list_presets, user_preset_dir

SHELLS = ("bash", "zsh")

_FUNCTION = r"""
_minimind_tui() {
    # Under zsh (through bashcompinit): bash's 0-based arrays, and no error for an empty glob.
    [[ -n ${ZSH_VERSION-} ]] && setopt localoptions ksharrays nullglob
    local cur=${COMP_WORDS[COMP_CWORD]} word flag i
    COMPREPLY=()
    if (( COMP_CWORD == 1 )) && [[ $cur != -* ]]; then
        COMPREPLY=($(compgen -W "%(subcommands)s" -- "$cur"))
        return
    fi
    local flags="%(flags)s"
    case ${COMP_WORDS[1]} in
        completion) (( COMP_CWORD == 2 )) && COMPREPLY=($(compgen -W "%(shells)s" -- "$cur"))
                    return ;;
        serve) flags="%(serve_flags)s"
               for (( i = 2; i < COMP_CWORD; i++ )); do
                   [[ ${COMP_WORDS[i]} == -- ]] && flags="%(flags)s"  # the app's own flags
               done ;;
%(subcommand_cases)s
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
        return
    fi
    # The flag this word is a value of: the previous word, or the last flag before it when
    # that one takes a list (--report_to tensorboard wandb ...).
    for (( i = COMP_CWORD - 1; i > 0; i-- )); do
        word=${COMP_WORDS[i]}
        if [[ $word == -* ]]; then
            if (( i == COMP_CWORD - 1 )) || [[ " %(list_flags)s " == *" $word "* ]]; then
                flag=$word
            fi
            break
        fi
    done
    case $flag in
        --preset)
            # A user's names may hold spaces: matched here, and escaped as typed words are
            # (compgen -W would split "my run" in two).
            local user=() file name
            for file in %(user_dir)s/*.toml; do
                [[ -e $file ]] || continue
                name=${file##*/} && name=${name%%.toml}
                [[ $name == "$cur"* ]] && user+=("$(printf '%%q' "$name")")
            done
            COMPREPLY=($(compgen -W "%(presets)s" -- "$cur") "${user[@]}"
                       $(compgen -f -X '!*.toml' -- "$cur")) ;;
%(value_cases)s
    esac
}
complete -o default -F _minimind_tui minimind-tui
"""

# zsh runs the bash function through its bash compatibility layer, which needs compinit.
_ZSH_PRELUDE = """(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }
autoload -U +X bashcompinit && bashcompinit
"""


def script(shell: str, parser: argparse.ArgumentParser, serve_parser: argparse.ArgumentParser,
           subcommands: dict[str, argparse.ArgumentParser | None]) -> str:
    """`subcommands`: name -> its parser (None: it has none to complete)."""
    flags, list_flags, cases = [], [], []
    for action in parser._actions:  # argparse has no public way to list its actions
        flags += action.option_strings
        if action.nargs == "*":
            list_flags += action.option_strings
        values = _values(action)
        if values:
            cases.append(f"        {'|'.join(action.option_strings)}) "
                         f'COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")) ;;')
    bundled = [name for name, path in list_presets().items() if not is_user_preset(path)]
    body = _FUNCTION % {
        "subcommands": " ".join(subcommands), "shells": " ".join(SHELLS),
        "flags": " ".join(flags), "list_flags": " ".join(list_flags),
        "serve_flags": " ".join(s for a in serve_parser._actions for s in a.option_strings),
        "subcommand_cases": "\n".join(_subcommand_case(name, sub)
                                      for name, sub in subcommands.items()
                                      if name not in ("serve", "completion")),
        "user_dir": shlex.quote(str(user_preset_dir())), "presets": " ".join(bundled),
        "value_cases": "\n".join(cases)}
    if shell == "zsh":
        body = _ZSH_PRELUDE + body
    return body.lstrip("\n")


def _subcommand_case(name: str, parser: argparse.ArgumentParser | None) -> str:
    """The `case` branch of one subcommand: its own flags, and the values of those that take
    a fixed set; other words complete as file names."""
    if parser is None:
        return f"        {name}) return ;;"
    actions = [a for p in _with_subparsers(parser) for a in p._actions]
    flags = " ".join(dict.fromkeys(s for a in actions for s in a.option_strings))
    values = [f"                {'|'.join(a.option_strings)}) COMPREPLY=($(compgen -W "
              f'"{" ".join(map(str, a.choices))}" -- "$cur")); return ;;'
              for a in actions if a.option_strings and a.choices]
    inner = ("\n            case ${COMP_WORDS[COMP_CWORD-1]} in\n" + "\n".join(values)
             + "\n            esac") if values else ""
    # Its own commands first (`tokenizer train`): they complete as the first word after it.
    commands = " ".join(name for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction) for name in a.choices)
    first = (f'\n            (( COMP_CWORD == 2 )) && [[ $cur != -* ]] && '
             f'COMPREPLY=($(compgen -W "{commands}" -- "$cur")) && return'
             if commands else "")
    return f'        {name}) flags="{flags}"{first}{inner} ;;'


def _with_subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for a in subs for p in a.choices.values())]


def _values(action: argparse.Action) -> list[str]:
    """The fixed values a flag takes, from its metavar ("{a|b}", "0|1")."""
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if metavar == "0|1" or (metavar.startswith("{") and metavar.endswith("}")):
        return metavar.strip("{}").split("|")
    return []


class _Parsing(BaseException):  # no `except Exception` in a command may swallow it
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def subcommand_parser(command: str) -> argparse.ArgumentParser | None:
    """The parser a subcommand builds when it runs: its `main` is called and stopped as it
    starts parsing, so each subcommand keeps its parser where it is (one home for its flags)
    and nothing of it runs."""
    module, _, function = command.partition(":")

    def stop(parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        raise _Parsing(parser)

    parse = argparse.ArgumentParser.parse_known_args  # parse_args goes through it
    argparse.ArgumentParser.parse_known_args = stop  # type: ignore[method-assign]
    try:
        getattr(importlib.import_module(module), function)([])
    except _Parsing as parsing:
        return parsing.parser
    finally:
        argparse.ArgumentParser.parse_known_args = parse  # type: ignore[method-assign]
    return None


def main(argv: list[str]) -> int:
    from minimind_tui.cli.main import SUBCOMMANDS, build_parser
    from minimind_tui.cli.serve import build_parser as build_serve_parser

    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="minimind-tui completion", description="Print a shell completion script.",
        epilog='Enable it with: eval "$(minimind-tui completion bash)" in ~/.bashrc (zsh: '
               'the same with zsh, in ~/.zshrc).')
    parser.add_argument("shell", choices=SHELLS)
    args = parser.parse_args(argv)
    subcommands = {name: None if name in ("serve", "completion") else subcommand_parser(command)
                   for name, (command, _) in SUBCOMMANDS.items()}
    print(script(args.shell, build_parser(), build_serve_parser(), subcommands), end="")
    return exit_codes.OK
