"""Every `lkdevice` subcommand's --help ends with an example a user can copy."""

from __future__ import annotations

import argparse

import pytest

from lkdevice.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_the_help_has_an_example(name):
    help_text = subcommands()[name].format_help()
    assert "example: lkdevice " + name in " ".join(help_text.split()), help_text


def test_the_board_tools_are_there():
    assert {"flash", "doctor", "install", "provision", "monitor"} <= set(subcommands())
