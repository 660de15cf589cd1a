"""The ``mura`` command line: one module per group, shared options with one default everywhere."""

from __future__ import annotations

import argparse

from mura.cli import GROUPS, build_parser
from mura.cli.options import DEFAULT_MODEL


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_in_the_map() -> None:
    commands = _subcommands(build_parser())
    assert set(commands) == {
        "synth", "synth-dicom", "workspace", "team", "predict", "dicom-node", "monitor", "serve-model", "serve-ui", "mlflow-ui",
        "kserve", "reviewers", "feedback",
    }  # fmt: skip
    assert all(callable(getattr(group, "add_commands", None)) for group in GROUPS)


def test_shared_options_have_one_default_everywhere() -> None:
    commands = _subcommands(build_parser())
    with_model = {name: p for name, p in commands.items() if any("--model" in a.option_strings for a in p._actions)}
    assert set(with_model) == {"predict", "dicom-node", "monitor", "serve-model", "serve-ui"}
    for name, parser in with_model.items():
        model = next(a for a in parser._actions if "--model" in a.option_strings)
        tracking = next(a for a in parser._actions if "--tracking-uri" in a.option_strings)
        assert model.default == DEFAULT_MODEL and tracking.default is None, name
    args = build_parser().parse_args(["serve-model", "-m", "models:/mura-ensemble/3"])  # MLflow's own short flag
    assert args.model == "models:/mura-ensemble/3" and args.func.__module__ == "mura.cli.serving"


def test_servers_share_the_feedback_options() -> None:
    from mura.operations.feedback import Retention

    for command in ("serve-ui", "dicom-node"):
        parser = _subcommands(build_parser())[command]
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert {"--feedback-dir", "--feedback-db", "--answer-days", "--feedback-days"} <= flags, command
    args = build_parser().parse_args(["serve-ui", "--feedback-dir", "fb", "--reviewers", "r", "--answer-days", "7"])
    from mura.cli.options import feedback_settings

    settings = feedback_settings(args)
    assert str(settings["feedback_dir"]) == "fb" and settings["feedback_retention"] == Retention(7.0, 730.0)
