"""The command line explains itself: --version, advlora list, defaults and examples in every --help, one spelling
per idea (old spellings as deprecated aliases), --json on stdout, the exit-status table, and run manifests that
say how a run ran."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from advlora import __version__
from advlora.cli import COMMANDS, build_parser, command_parsers, main, subcommand_parsers
from advlora.cli.common import HelpFormatter


def _every_parser() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser and every action's (``data check``, ``adapter info``), by its prog name."""
    out = {}
    for name, p in command_parsers().items():
        out[f"advlora {name}"] = p
        for action, sp in subcommand_parsers(p).items():
            out[f"advlora {name} {action}"] = sp
    return out


def test_version_prints_the_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"advlora {__version__}"


def test_version_and_list_configs_import_no_torch():
    code = ("import sys\nfrom advlora.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert main(['list', 'configs']) == 0\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def test_list_attacks_names_every_registered_attack_with_a_description(capsys):
    from advlora.attacks import registry

    assert main(["list", "attacks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {ln.split()[0]: ln for ln in lines if ln.strip()}
    assert set(listed) == set(registry.names())
    for name, line in listed.items():
        assert registry.get(name).kind in line and len(line.split(maxsplit=1)[1]) > 20, line


@pytest.mark.parametrize("kind, names", [
    ("formats", lambda: __import__("advlora.data", fromlist=["FORMATS"]).FORMATS),
    ("methods", lambda: __import__("advlora.adapters", fromlist=["METHODS"]).METHODS),
    ("objectives", lambda: __import__("advlora.training.objectives", fromlist=["names"]).names()),
    ("datasets", lambda: __import__("advlora.data", fromlist=["EMBEDDED"]).EMBEDDED),
    ("models", lambda: __import__("advlora.models", fromlist=["TINY_DEFAULTS"]).TINY_DEFAULTS),
    ("inits", lambda: __import__("advlora.adapters.init", fromlist=["INITIALISATIONS"]).INITIALISATIONS),
    ("exports", lambda: __import__("advlora.experiments.exports", fromlist=["DECLARED"]).DECLARED.names()),
])
def test_list_reads_each_registry(kind, names, capsys):
    assert main(["list", kind, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    missing = set(names()) - set(listed)
    assert not missing, missing
    assert all(isinstance(v, str) and v.strip() for v in listed.values())


def test_an_initialisation_declared_after_import_is_listed(capsys):
    from advlora.adapters import init

    declared = init.Initialisation("throwaway-init", lambda weights, cfg: [], doc="a test's own initialisation")
    with init.DECLARED.registered(declared):
        assert main(["list", "inits", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["throwaway-init"] == "a test's own initialisation"
    assert main(["list", "inits", "--json"]) == 0
    assert "throwaway-init" not in json.loads(capsys.readouterr().out)


def test_list_configs_names_every_shipped_yaml(capsys):
    from importlib import resources

    shipped = {f.name[:-5] for f in resources.files("advlora.configs").iterdir() if f.name.endswith(".yaml")}
    assert main(["list", "configs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) == shipped and all("--config" in v for v in listed.values())
    with pytest.raises(SystemExit) as e:
        main(["list", "nothing"])
    assert e.value.code == 2


def test_every_help_shows_defaults_and_an_example():
    parsers = _every_parser()
    assert {f"advlora {c}" for c in COMMANDS} <= set(parsers)
    fmt = HelpFormatter("advlora")
    for prog, p in parsers.items():
        text = p.format_help()
        assert "examples:\n  advlora" in text or "examples:\n  torchrun" in text, f"{prog}: no example"
        for a in p._actions:
            if (not a.option_strings or a.nargs == 0 or a.help == argparse.SUPPRESS or a.required
                    or isinstance(a, argparse._SubParsersAction)):
                continue
            line = fmt._get_help_string(a)
            assert "default" in line.lower(), f"{prog} {a.option_strings[0]}: the help names no default"


def test_eval_help_states_its_defaults():
    parser, _ = build_parser("eval")
    text = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0].choices["eval"].format_help()
    flat = " ".join(text.split())
    for expected in ("(default: tiny-clip)", "(default: emoji)", "default: 4/255", "(default: 10)",
                     "(default: 128)", "(default: 1000)", "2/255"):
        assert expected in flat, expected


def test_train_help_defaults_are_the_config_defaults():
    from advlora.attacks.threat import parse_eps
    from advlora.cli.train import DEFAULTS
    from advlora.training.config import load_run_config

    cfg = load_run_config(None)
    for key, stated in DEFAULTS.items():
        section, name = key.split(".")
        if key in ("attack.eps", "attack.steps"):         # the threat model's fields, read flat
            value = getattr(cfg.attack.threat, name)
            stated = parse_eps(stated) if name == "eps" else stated
        else:
            value = getattr(getattr(cfg, section), name)
        assert value == stated, (key, value, stated)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser, _ = build_parser(argv[0])
    return parser.parse_known_args(argv)[0]


def test_deprecated_spellings_still_work_and_warn(capsys):
    args = _parse(["eval", "--steps", "3", "--batch", "7", "--attack", "pgd"])
    assert (args.steps, args.batch_size, args.attacks) == (3, 7, "pgd")
    err = capsys.readouterr().err
    assert "--steps is deprecated, use --attack-steps" in err and "--batch is deprecated" in err
    assert _parse(["eval", "--attack-steps", "4"]).steps == 4 and _parse(["eval"]).steps == 10
    assert _parse(["attack", "--steps", "2"]).steps == 2
    assert _parse(["train", "--no-progress"]).progress == "off"
    assert _parse(["train"]).progress is None and _parse(["train", "--progress", "log"]).progress == "log"
    a = _parse(["adapter", "info", "--random-size", "clip:test"])
    assert a.random_model == "clip:test"
    b = _parse(["bench", "--size", "tiny", "--batch", "2", "--device-sizes", "vit-b32"])
    assert (b.random_model, b.batch_size, b.device_models) == ("tiny", 2, "vit-b32")
    assert _parse(["bench"]).random_model == "clip:vit-b32"
    for command in ("demo", "grid", "ablate", "eval", "train"):
        assert "--progress" in _every_parser()[f"advlora {command}"].format_help()
    capsys.readouterr()


def test_train_flags_reach_the_config():
    from advlora.cli.train import build_config

    args = _parse(["train", "--attack-steps", "5", "--random-model", "clip:test", "--progress", "off",
                   "--eps", "3/255"])
    args.overrides = []
    cfg = build_config(args)
    assert (cfg.attack.threat.steps, cfg.model.random, cfg.train.progress) == (5, "clip:test", "off")


def test_train_progress_reads_old_booleans():
    from advlora.errors import AdvloraError
    from advlora.training.config import TrainConfig

    assert TrainConfig(progress=False).progress == "off" and TrainConfig(progress=True).progress == "auto"
    with pytest.raises(AdvloraError, match="train.progress"):
        TrainConfig(progress="loud")


def test_bench_random_model_must_name_the_arch_of_its_size():
    from advlora.cli.bench import bench_size
    from advlora.errors import AdvloraError

    assert bench_size("clip:vit-b32") == "vit-b32" and bench_size("blip:blip-base") == "blip-base"
    assert bench_size("tiny") == "tiny"
    with pytest.raises(AdvloraError, match="blip:blip-base"):
        bench_size("clip:blip-base")


def test_exit_codes_are_one_table_followed_by_main(tmp_path, capsys):
    from advlora import errors, preempt

    assert errors.EXIT_CODES == {0: errors.EXIT_CODES[0], 1: errors.EXIT_CODES[1], 2: errors.EXIT_CODES[2],
                                 74: errors.EXIT_CODES[74], 75: errors.EXIT_CODES[75], 130: errors.EXIT_CODES[130]}
    assert preempt.PREEMPTED_EXIT == errors.EXIT_PREEMPTED == 75
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for code in errors.EXIT_CODES:
        assert f"{code:>3}  " in help_text
    assert main([]) == errors.EXIT_BAD_INPUT
    assert main(["eval", "--data", str(tmp_path / "missing.jsonl")]) == errors.EXIT_BAD_INPUT
    bad = tmp_path / "ann.jsonl"
    bad.write_text(json.dumps({"image": "gone.png", "captions": ["a thing"]}) + "\n")
    assert main(["data", "check", str(bad)]) == errors.EXIT_PROBLEMS


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    from train_utils import save_test_model, write_data

    root = tmp_path_factory.mktemp("cli")
    return save_test_model(root / "model"), write_data(root / "data", n=6)


@pytest.mark.parametrize("argv", [
    ["eval"],
    ["eval", "--attacks", "pgd,fgsm", "--attack-steps", "1", "--no-sanity"],
    ["attack", "--attack", "pgd", "--attack-steps", "1", "--no-sanity"],
])
def test_json_is_the_metrics_and_the_manifest_says_how_the_run_ran(argv, model_and_data, tmp_path, capsys):
    model, ann = model_and_data
    out = tmp_path / "run"
    assert main([*argv, "--model", str(model), "--data", str(ann), "--device", "cpu", "--batch-size", "4",
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)                    # stdout is the JSON object and nothing else
    assert printed == json.loads((out / "metrics.json").read_text())
    assert "clean" in printed and bool(printed.get("robust")) == (len(argv) > 1)   # clean-only: no attack entries
    assert "run folder:" in captured.err                  # the summary went to stderr
    ex = json.loads((out / "manifest.json").read_text())["execution"]
    import torch

    assert ex["processes"] == 1 and ex["threads"] == torch.get_num_threads()
    assert ex["device"] == "cpu" and ex["dtype"] == "float32"


def test_eval_dtype_applies_to_clean_evaluation(model_and_data, tmp_path, capsys):
    model, ann = model_and_data
    out = tmp_path / "run"
    assert main(["eval", "--model", str(model), "--data", str(ann), "--device", "cpu", "--dtype", "float64",
                 "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["execution"]["dtype"] == "float64"


def test_manifest_reads_the_world_size(monkeypatch):
    from advlora.runs import execution, manifest

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert manifest(0)["execution"]["processes"] == 2
    assert execution(device="cuda:1", dtype="torch.bfloat16", processes=4)["dtype"] == "bfloat16"


def test_train_json_and_manifest(tmp_path, capsys):
    import yaml
    from train_utils import tiny_config, write_data

    ann = write_data(tmp_path / "data", n=8)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_config(ann)))
    out = tmp_path / "out"
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--steps", "1", "--attack-steps", "1",
                 "--out", str(out), "--json", "--progress", "log"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == json.loads((out / "metrics.json").read_text()) and "clean" in printed
    assert "run folder:" in captured.err
    ex = json.loads((out / "manifest.json").read_text())["execution"]
    assert (ex["processes"], ex["device"], ex["dtype"], ex["mixed_precision"]) == (1, "cpu", "float32", "no")
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["progress"] == "log"


def test_docs_show_the_exit_status_table():
    from pathlib import Path

    from advlora.errors import EXIT_CODES

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in text, code


def test_python_OO_loads_models_and_the_evaluation_protocol():
    """Under ``python -OO`` docstrings are stripped: transformers' models still import (advlora.runtime's
    pass-through for its docstring decorator) and the evaluation protocol is a constant, not a docstring."""
    code = ("import advlora\nfrom advlora.models.tiny import random_model\n"
            "from advlora.evaluation.results import PROTOCOL\n"
            "m = random_model('clip', 'test')\nassert PROTOCOL.strip() and m.encode_text(['a cat']).shape[0] == 1\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
