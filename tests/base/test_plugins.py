"""Registration without import side effects: ``advlora.models`` alone builds a tiny default (its builder is a
reference the training stage answers at call time), ``advlora list`` reads the registries live, and a plugin
module (``--plugin``, ``ADVLORA_PLUGINS``, the ``advlora.plugins`` entry points) registering a family, an adapter
method, an attack, an objective and a format is listed and usable by ``advlora train`` and ``advlora eval``. The
first plugin is the complete example of docs/howto-plugin.md, read from the page."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from train_utils import save_test_model, write_data

import advlora
from advlora import plugins
from advlora.adapters import method as methods
from advlora.attacks import registry as attacks
from advlora.cli import _command_and_plugins, main
from advlora.errors import AdvloraError
from advlora.models import FAMILIES
from advlora.models import family as families

ROOT = Path(__file__).resolve().parents[2]
HOWTO = ROOT / "docs" / "howto-plugin.md"


def test_models_alone_build_a_tiny_default(tmp_path):
    """In a fresh process that imports only advlora.models: the training stage is not imported, the declared
    builder is training's pre-training (resolved at call time), and ``load_model("tiny-clip")`` with an empty
    ADVLORA_HOME builds it through the registry (here pointed at a fast random-model builder)."""
    (tmp_path / "fastbuild.py").write_text(textwrap.dedent("""
        from advlora.models import save_model
        from advlora.models.tiny import random_model

        def build(arch, out):
            save_model(random_model(arch, "test", seed=0), out)
    """))
    code = textwrap.dedent("""
        import sys
        import advlora.models as m
        from advlora.models import family
        before = sorted(k for k in sys.modules if k.startswith("advlora.training"))
        default = family.tiny_builder()
        print("before", before, "default", default.__module__, default.__name__)
        family.register_tiny_builder("fastbuild:build")
        model = m.load_model("tiny-clip")
        print("loaded", model.arch, model.alias, model.name_or_path)
    """)
    home = tmp_path / "home"
    env = {**os.environ, "ADVLORA_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(tmp_path)])}
    env.pop("ADVLORA_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "before [] default advlora.training.pretrain build_tiny" in out.stdout
    assert f"loaded clip tiny-clip {home / 'models' / 'tiny-clip'}" in out.stdout
    assert (home / "models" / "tiny-clip" / "config.json").is_file()


def test_the_declared_builder_is_the_pretraining(tmp_path, monkeypatch):
    from advlora.training import pretrain

    assert plugins.resolve(families.TINY_BUILDER) is pretrain.build_tiny
    assert families.tiny_builder() is pretrain.build_tiny
    with pytest.raises(advlora.AdvloraError, match="cannot resolve 'advlora.nowhere:build'"):
        plugins.resolve("advlora.nowhere:build")
    with pytest.raises(advlora.AdvloraError, match="must look like package.module:attribute"):
        plugins.resolve("advlora.training.pretrain")


def _doc_plugin() -> str:
    """The first Python block of docs/howto-plugin.md: the complete example plugin."""
    blocks = re.findall(r"```python\n(.*?)```", HOWTO.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "docs/howto-plugin.md has no python block"
    return blocks[0]


#: a second plugin: a training objective and an annotation format (JSON lines under another name)
EXTRA = '''
from advlora.data.formats import register_format
from advlora.data.generic import read_jsonl
from advlora.data.records import Format
from advlora.training import objectives
from advlora.training.objectives.tecoa import caption_attack


def doubled(inputs):
    itc = inputs.itc(inputs.adv)
    return objectives.Terms(2 * itc, parts={"itc": itc})


objectives.register(objectives.Objective("plugin-doubled", caption_attack, doubled, doc="twice TeCoA's loss"))
register_format(Format("plugin-lines", read_jsonl, None, doc="JSON lines, named by a plugin"))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The how-to's plugin written to ``tmp_path/my_plugin.py``; whatever it registered is removed after."""
    from advlora.data.formats import unregister_format
    from advlora.training import objectives

    monkeypatch.setenv(plugins.ENV, "")   # restored (removed) after the test: load_plugins writes it
    path = tmp_path / "my_plugin.py"
    path.write_text(_doc_plugin(), encoding="utf-8")
    (tmp_path / "extra_plugin.py").write_text(EXTRA, encoding="utf-8")
    yield path
    for name in ("my_plugin", "extra_plugin"):
        sys.modules.pop(name, None)
    methods.unregister("plugin-scale")
    attacks.unregister("plugin-noise")
    objectives.unregister("plugin-doubled")
    unregister_format("plugin-lines")
    if "plugin-clip" in FAMILIES:
        families.unregister_family("plugin-clip")


def _listed(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_plugin_is_listed_and_used_by_train_and_eval(plugin, tmp_path, capsys):
    assert "plugin-scale" not in _listed(capsys, "list", "methods")
    assert "plugin-scale" in _listed(capsys, "--plugin", str(plugin), "list", "methods")
    assert "trainable on the tiny CLIP" in _listed(capsys, "list", "methods")["plugin-scale"]
    assert "plugin-noise" in _listed(capsys, f"--plugin={plugin}", "list", "attacks")
    models = _listed(capsys, "list", "models")          # a family registered after import is listed: read live
    assert {"<hub id or folder>:plugin-clip", "--random-model plugin-clip:plugin-small"} <= set(models)
    assert os.environ[plugins.ENV] == str(plugin)       # what a child advlora process imports too
    extra = str(plugin.parent / "extra_plugin.py")
    assert "plugin-doubled" in _listed(capsys, "--plugin", extra, "list", "objectives")
    assert "plugin-lines" in _listed(capsys, "list", "formats")
    assert os.environ[plugins.ENV] == f"{plugin},{extra}"

    ann = write_data(tmp_path / "data", n=8)
    run = tmp_path / "run"
    assert main(["--plugin", str(plugin), "--plugin", extra, "train", "--random-model", "plugin-clip:plugin-small",
                 "--data", str(ann), "--format", "plugin-lines", "--method", "plugin-scale",
                 "--objective", "plugin-doubled", "--steps", "2", "--batch-size", "4", "--attack-steps", "1",
                 "--data.train_split", "test", "--data.val_split", "test", "--data.test_split", "test",
                 "--eval.attack", "plugin-noise", "--eval.test_steps", "1", "--out", str(run)]) == 0
    meta = json.loads((run / "adapter" / "advlora.json").read_text())
    assert meta["arch"] == "plugin-clip" and meta["method"] == "plugin-scale"
    assert all(".mlp.fc1" in n for n in meta["layers"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["objective"] == "plugin-doubled" and "plugin-noise" in json.dumps(metrics)
    capsys.readouterr()

    base, ev = save_test_model(tmp_path / "base"), tmp_path / "ev"
    assert main(["--plugin", str(plugin), "eval", "--model", str(base), "--data", str(ann), "--split", "test",
                 "--attacks", "plugin-noise", "--eps", "8/255", "--no-sanity", "--out", str(ev), "--json"]) == 0
    robust = json.loads(capsys.readouterr().out)["robust"]
    assert list(robust) == ["plugin-noise@8/255"]
    assert robust["plugin-noise@8/255"]["metrics"]["r_mean"] <= json.loads((ev / "metrics.json").read_text()
                                                                           )["clean"]["r_mean"]


def test_plugins_from_the_environment_and_entry_points(plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, " my_plugin , ")
    assert "plugin-noise" in _listed(capsys, "list", "attacks")
    assert os.environ[plugins.ENV] == "my_plugin"
    plugin.parent.joinpath("other_plugin.py").write_text("IMPORTED = True\n")
    found = [metadata.EntryPoint(name="other", value="other_plugin", group=plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins.metadata, "entry_points",
                        lambda group: found if group == plugins.ENTRY_POINT_GROUP else [])
    try:
        assert plugins.load_plugins() == ["other_plugin", "my_plugin"]
        assert sys.modules["other_plugin"].IMPORTED
    finally:
        sys.modules.pop("other_plugin", None)


def test_a_bad_plugin_is_one_line_and_help_imports_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(plugins.ENV, "")
    assert main(["--plugin", "no_such_plugin_module", "list", "methods"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("advlora: error: plugin 'no_such_plugin_module' cannot be imported: No module named "
                   "'no_such_plugin_module'")
    assert main(["--plugin", str(tmp_path / "missing.py"), "list", "attacks"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert _command_and_plugins(["-v", "--plugin", "a", "--plugin=b.py", "train", "--plugin", "c"]) == \
        ("train", ["a", "b.py"])
    assert _command_and_plugins(["--plugin", "a"]) == (None, ["a"])
    with pytest.raises(SystemExit):                     # `advlora --help` imports no plugin: it just prints
        main(["--plugin", "no_such_plugin_module", "--help"])


def test_a_format_registered_later_is_detected_before_the_generic_ones(tmp_path):
    from advlora.data.formats import FORMATS, detect_format, register_format, unregister_format
    from advlora.data.generic import read_jsonl
    from advlora.data.records import Format

    ann = write_data(tmp_path / "data", n=4)
    late = Format("late-jsonl", read_jsonl, lambda path, head: path.suffix == ".jsonl", doc="claims .jsonl")
    register_format(late)
    try:
        names = list(FORMATS)
        assert names.index("late-jsonl") < names.index("jsonl") and names[-1] != "late-jsonl"
        assert detect_format(ann) == "late-jsonl"
        register_format(late)                           # the same declaration again: nothing changes
        assert list(FORMATS) == names
        with pytest.raises(AdvloraError, match="declared twice"):
            register_format(Format("late-jsonl", read_jsonl, None, doc="another reader under the same name"))
    finally:
        unregister_format("late-jsonl")
    assert "late-jsonl" not in FORMATS


def test_a_grid_worker_imports_the_parent_plugins(tmp_path, monkeypatch):
    """A spawned grid worker starts from a fresh interpreter: its initializer imports the plugins the parent
    named in ADVLORA_PLUGINS, so a plugin's method or attack is known in every cell."""
    from advlora.experiments import grid

    (tmp_path / "worker_plugin.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "worker_plugin")
    try:
        grid._worker_init(1, 30)
        assert sys.modules["worker_plugin"].IMPORTED
    finally:
        sys.modules.pop("worker_plugin", None)
