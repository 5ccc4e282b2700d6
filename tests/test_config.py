"""Composition, the registries behind the option names, and bad input through the real CLI.

Bad input must give one clear message naming the field (and row/column for files) and leave no
run behind in the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONF, ROOT, compose, short_id
from gradlab import data, devices, gradients, models, optim, schedules
from gradlab.config import SCHEMAS, builders

GROUPS = ["data", "model", "grad", "optimizer", "device", "schedule"]
DESIGN_OPTIONS = {
    "data": {"thermometer", "doubling", "noisy_line", "line", "bias_column", "teacher", "csv", "none"},
    "model": {"linear", "linear_nobias", "quadratic", "parameter_module", "nn_linear", "mlp", "rosenbrock", "bowl"},
    "grad": {"analytic", "autograd", "finite_difference"},
    "optimizer": {"gd", "sgd", "adam", "adamw", "rmsprop", "adagrad", "lbfgs", "asgd", "adadelta", "adamax", "nadam", "radam", "rprop"},
    "device": {"cpu", "cuda", "mps", "auto", "numpy"},
    "schedule": {"constant", "step", "multistep", "exponential", "cosine", "cosine_restarts", "linear", "warmup_cosine",
                 "onecycle", "plateau"},
}


def options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


@pytest.mark.parametrize("group", GROUPS)
def test_yaml_options_schemas_and_registries_match(group):
    assert options(group) == set(SCHEMAS[group]) >= DESIGN_OPTIONS[group]
    registry = {"data": data.DATASETS, "model": models.MODELS, "grad": gradients.METHODS,
                "optimizer": optim.OPTIMIZERS, "device": devices.DEVICES, "schedule": schedules.SCHEDULES}[group]
    # every option's `name` is a builder's key, and every builder has an option
    assert {getattr(compose(f"{group}={o}"), group).name for o in options(group)} == set(registry)
    assert builders(group) == sorted(registry)  # what validate lets a <group>.name hold


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in sorted(options(g))])
def test_every_option_composes_with_its_own_schema(group, option):
    cfg = compose(f"{group}={option}")
    node = getattr(cfg, group)
    assert node.name == option or (group, option, node.name) == ("optimizer", "sgd_momentum", "sgd")
    assert type(node) is SCHEMAS[group][option]


@pytest.mark.parametrize("name", sorted(DESIGN_OPTIONS["model"]))
def test_every_model_builds_and_lists_its_parameters_in_start(name):
    cfg = compose(f"model={name}")
    model = models.build(cfg.model, n_inputs=2)
    assert set(cfg.model.start) == set(model.shapes)


def test_default_experiment_name():
    from gradlab.describe import run_name

    cfg = compose()
    assert cfg.tracking.experiment is None  # resolved to "default" by the CLI
    assert run_name(cfg) == "thermometer-x0.1-linear-autograd-sgd-lr0.01"
    assert run_name(compose("experiment=rosenbrock_gd")) == "rosenbrock-analytic-gd-lr0.001"


def test_headline_sweep_children_are_named_by_what_varies():
    from gradlab.describe import run_name

    varied = ["optimizer", "optimizer.lr", "data.scaling"]
    names = {}
    for o in ("gd", "adam"):
        for lr in ("1e-4", "1"):
            for scaling in ("none", "factor", "standardize"):
                job = [f"optimizer={o}", f"optimizer.lr={lr}", f"data.scaling={scaling}", "train.epochs=3000"]
                names[(o, lr, scaling)] = run_name(compose(*job), job, varied)
    assert names[("adam", "1e-4", "factor")].startswith("adam lr=0.0001 ×0.1 · thermometer-x0.1-")
    assert names[("gd", "1", "none")].startswith("gd lr=1 raw · ")
    assert names[("gd", "1", "standardize")].startswith("gd lr=1 standardize · ")
    assert len(set(names.values())) == len(names)
    # a single run leads with its command line's choices (not the experiment's name, nor tracking's)
    job = ["experiment=rosenbrock_gd", "optimizer.lr=0.002", "tracking.plots=none", "train.seed=3"]
    assert run_name(compose(*job), job) == "lr=0.002 seed=3 · rosenbrock-analytic-gd-lr0.002-seed3"


# ------------------------------------------------------------------------- bad input
@pytest.fixture
def csv_file(tmp_path):
    def write(text: str):
        path = tmp_path / "data.csv"
        path.write_text(text)
        return str(path)

    return write


GOOD_CSV = "a,b,y\n1,2,3\n2,3,5\n3,5,8\n4,7,11\n5,9,14\n"

BAD = [  # (overrides, exit code, words the message must contain)
    (["optimizer=foo"], 2, ["optimizer=foo: no such option; the options are adadelta, adagrad, adam, adamax, adamw, asgd, gd, lbfgs, nadam, radam, "
                                 "rmsprop, rprop, sgd, sgd_momentum"]),
    (["optimizer.lr=abc"], 2, ["optimizer.lr", "could not be converted to Float"]),
    (["optimizer=adam", "optimizer.momentum=0.9"], 2, ["optimizer.momentum: not a key of optimizer=adam; the keys are amsgrad, betas, eps, lr"]),
    (["optimizer.lrr=0.1"], 2, ["optimizer.lrr: not a key of optimizer (SGDConfig); the keys are dampening, lr, momentum"]),
    (["model=linear", "model.hiddn=3"], 2, ["model.hiddn: not a key of model=linear; the keys are "]),
    (["--config-dir=sweeps", "-cn", "seed"], 2, ["no sweep 'seed' in sweeps; the sweeps are batch_size, "]),
    (["-cd", "sweeps", "-cn", "seed"], 2, ["no sweep 'seed' in sweeps; the sweeps are batch_size, ", "lr_scale_optimizer"]),
    (["+optimizer.foo=1"], 2, ["optimizer.foo=1", "not a key of optimizer=sgd"]),
    (["train.epochs=ten"], 2, ["train.epochs", "could not be converted to Integer"]),
    (["optimizer.lr=0"], 2, ["optimizer.lr=0.0", "finite number > 0"]),
    (["optimizer.lr=-1e-3"], 2, ["optimizer.lr=-0.001", "finite number > 0"]),
    (["optimizer.lr=nan"], 2, ["optimizer.lr=nan", "finite number > 0"]),
    (["optimizer.lr=inf"], 2, ["optimizer.lr=inf", "finite number > 0"]),
    (["data.val_fraction=0"], 2, ["data.val_fraction=0.0", "(0, 1)", "null"]),
    (["data.val_fraction=1"], 2, ["data.val_fraction=1.0", "(0, 1)"]),
    (["data=doubling", "data.val_fraction=0.2"], 2, ["⌊0.2·3⌋ = 0", "validation split empty"]),
    (["train.epochs=0"], 2, ["train.epochs=0", ">= 1"]),
    (["train.batch_size=0"], 2, ["train.batch_size=0", ">= 1"]),
    (["device=numpy"], 2, ["device='numpy'", "grad=analytic with optimizer=gd only", "device=cpu"]),
    (["device=numpy", "grad=analytic", "optimizer=gd", "model=nn_linear"], 2, ["model=nn_linear is a torch.nn.Module"]),
    (["model=rosenbrock"], 2, ["use data=none"]),
    (["data=none"], 2, ["data=none has no samples"]),
    (["model.start.w=[1,2,3]"], 2, ["model.start.w", "needs a number or 1 numbers"]),
    (["data=noisy_line", "train.batch_size=8", "data.scaling=standardize"], 2, ["data.scaling='standardize'", "use none"]),
    (["data=noisy_line"], 2, ["train.batch_size=None", "train.batch_size=8"]),
    (["optimizer=adam", "optimizer.eps=-1"], 2, ["optimizer.eps=-1.0", "torch.optim.Adam refuses it"]),
    (["optimizer=adagrad", "optimizer.lr_decay=-1"], 2, ["optimizer.lr_decay=-1.0", "refuses it"]),
    (["optimizer=adam", "optimizer.betas=[0.9]"], 2, ["optimizer.betas=[0.9]", "two numbers"]),
    (["optimizer=adadelta", "optimizer.rho=2"], 2, ["optimizer.rho=2.0", "torch.optim.Adadelta refuses it: Invalid rho value"]),
    (["optimizer=nadam", "optimizer.momentum_decay=-1"], 2, ["optimizer.momentum_decay=-1.0", "torch.optim.NAdam refuses it"]),
    (["optimizer=rprop", "optimizer.etas=[1.5,1.2]"], 2, ["optimizer.etas=(1.5, 1.2)", "torch.optim.Rprop refuses it"]),
    (["optimizer=rprop", "optimizer.step_sizes=[1,0.1]"], 2, ["optimizer.step_sizes=[1.0, 0.1]", "0 <= min <= max"]),
    (["optimizer=adam", "optimizer.betas=[0.9,0.9,0.9]"], 2, ["optimizer.betas=[0.9, 0.9, 0.9]", "two numbers"]),
    (["optimizer=lbfgs", "optimizer.history_size=0"], 2, ["optimizer.history_size=0", ">= 1"]),
    (["grad=finite_difference", "grad.eps=1e-300"], 2, ["grad.eps=1e-300", "machine epsilon of train.dtype=float32"]),
    (["optimizer.dampening=-1"], 2, ["optimizer.dampening=-1.0", "[0, 1]"]),
    (["tracking.experiment=" + "x" * 501], 2, ["tracking.experiment=", "at most 500 characters"]),
    (["data=line", "data.n_samples=100000000000"], 2, ["data.n_samples=100000000000", "GiB", "memory"]),
    (["data=teacher", "model=mlp", "data.n_inputs=1000000", "data.n_samples=1000000"], 2, ["data.n_samples=1000000", "GiB"]),
    (["schedule=step", "schedule.step_size=10", "schedule.gamma=-0.5"], 2, ["schedule.gamma=-0.5", "finite number > 0"]),
    (["schedule=step"], 2, ["schedule.step_size=None", "schedule=step needs it"]),
    (["schedule=multistep", "schedule.milestones=[5,3]"], 2, ["schedule.milestones=[5, 3]", "increasing order"]),
    (["schedule=exponential"], 2, ["schedule.gamma=None", "schedule=exponential needs it"]),
    (["schedule=cosine", "schedule.T_max=0"], 2, ["schedule.T_max=0", ">= 1"]),
    (["schedule=cosine_restarts", "schedule.T_0=4", "schedule.T_mult=0"], 2, ["schedule.T_mult=0", ">= 1"]),
    (["schedule=linear", "schedule.start_factor=0"], 2, ["schedule.start_factor=0.0", "(0, 1]"]),
    (["schedule=warmup_cosine", "schedule.warmup_epochs=2"], 2, ["schedule.warmup_epochs=2", "less than train.epochs=2"]),
    (["schedule=onecycle"], 2, ["schedule.max_lr=None", "schedule=onecycle needs it"]),
    (["schedule=onecycle", "schedule.max_lr=0.1", "schedule.pct_start=0.5"], 2, ["schedule.pct_start=0.5", "divides by zero"]),
    (["schedule=onecycle", "schedule.max_lr=0.1", "schedule.anneal_strategy=cosine"], 2, ["schedule.anneal_strategy", "cos, linear"]),
    (["schedule=plateau", "schedule.factor=1"], 2, ["schedule.factor=1.0", "(0, 1)"]),
    (["schedule=plateau", "schedule.patience=-1"], 2, ["schedule.patience=-1", ">= 0"]),
    (["schedule=cosine", "schedule.gamma=0.5"], 2, ["schedule.gamma: not a key of schedule=cosine; the keys are T_max, eta_min"]),
    (["device.name=cuda:7"], 2, ["device.name='cuda:7'", "no such device; the options are auto, cpu, cuda, mps, numpy",
                                 "CUDA_VISIBLE_DEVICES"]),
    (["-m", "-cd", "/nonexistent-folder", "-cn", "seeds"], 2, ["'/nonexistent-folder' not found", "-cd sweeps"]),
    (["-m", "hydra/launcher=batched", "hydra.launcher.max_batch=0", "optimizer.lr=0.1,0.2"], 2,
     ["hydra.launcher.max_batch=0 is out of range: at least 1"]),
    (["-m", "hydra/launcher=batched", "hydra.launcher.max_batch=-1", "optimizer.lr=0.1,0.2"], 2,
     ["hydra.launcher.max_batch=-1 is out of range: at least 1"]),
    # every seed fits in 64 bits (torch's generators take no more); train.epochs fits a metric exactly
    (["train.seed=18446744073709551616"], 2, ["train.seed=18446744073709551616", "-2^63 and 2^63 - 1"]),
    (["train.seed=9223372036854775808"], 2, ["train.seed=9223372036854775808", "-2^63 and 2^63 - 1"]),
    (["data=line", "data.seed=-9223372036854775809"], 2, ["data.seed=-9223372036854775809", "-2^63 and 2^63 - 1"]),
    (["data.split_seed=9223372036854775808"], 2, ["data.split_seed=9223372036854775808", "2^63 - 1"]),
    (["train.epochs=9223372036854775808"], 2, ["train.epochs=9223372036854775808", "at most 2^53"]),
    (["model=mlp", "data=teacher", "model.hidden=1000000000"], 2, ["model.hidden=1000000000", "GiB", "memory",
                                                                    "at most about"]),
    (["model=mlp", "data=teacher", "data.hidden=1000000000"], 2, ["data.hidden=1000000000", "GiB", "memory"]),
    (["data.scale_factor=1e308"], 2, ["data.scale_factor=1e+308", "beyond what train.dtype=float32 holds"]),
    (["data.scale_factor=1e39"], 2, ["data.scale_factor=1e+39", "beyond what train.dtype=float32 holds"]),
    (["optimizer=lbfgs", "optimizer.history_size=1000000000000"], 2, ["optimizer.history_size=1000000000000", "at most"]),
    # <group>.name is checked as <group>= is: the field, the value and the options, one line
    (["model.name=beale"], 2, ["model.name='beale' is not allowed: no such model; the options are bowl, linear, "
                               "linear_nobias, mlp, module, nn_linear, objective, parameter_module, quadratic, rosenbrock"]),
    (["data.name=foo"], 2, ["data.name='foo'", "no such data; the options are bias_column, csv, doubling, "]),
    (["grad.name=x"], 2, ["grad.name='x'", "no such grad; the options are analytic, autograd, finite_difference"]),
    (["schedule.name=x"], 2, ["schedule.name='x'", "no such schedule; the options are constant, cosine, "]),
    (["optimizer.name=sgd_momentum"], 2, ["optimizer.name='sgd_momentum'", "no such optimizer; the options are adadelta, "]),
    (["model.name=mlp"], 2, ["model.name='mlp'", "has keys (MLPConfig) this model's (ModelConfig) lacks", "choose it with model=mlp"]),
]
# An absent device is refused with what works; where the device exists, the case does not apply.
import torch  # noqa: E402

if not torch.cuda.is_available():
    BAD.append((["device=cuda"], 2, ["device='cuda'", "no CUDA device here", "device=cpu"]))
if not torch.backends.mps.is_available():
    BAD.append((["device=mps"], 2, ["device='mps'", "no Apple MPS device here", "device=cpu"]))


@pytest.mark.parametrize("args,code,words", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_refused_clearly_and_records_nothing(cli, runs, args, code, words):
    extra = [] if any(a.startswith("train.epochs") for a in args) else ["train.epochs=2"]
    got, out, err = cli(*args, *extra)
    assert got == code, err
    for w in words:
        assert w in err
    assert "Traceback" not in err and err.count("gradlab: error:") == 1
    assert runs() == []


@pytest.mark.parametrize("content,words", [
    ("", ["is empty", "header"]),
    ("a,b,y\n", ["header (a, b, y) but no data rows"]),
    ("a,b,y\n1,2,3\n2,abc,5\n", ["line 3", "column 'b'", "'abc'", "not a number"]),
    ("a,b,y\n1,2,3\n2,3,5\n,4,6\n", ["line 4", "column 'a'", "blank"]),
    ("a,b,y\n1,2,3\n2,3\n", ["line 3 has 2 cells", "header has 3"]),
    ("x,x,y\n1,2,3\n2,3,5\n", ["'x' appears 2 times in the header", "rename"]),
    ('a,b,y\n1,2,3\n"4\n5",3,5\n', ["line 4", "column 'a'", "not a number"]),  # a quoted cell across lines is one cell
    (",\n1,2\n3,4\n", ["the header (line 1) names no column", "name each column"]),
    ("x,\n1,2\n3,4\n", ["column 2 of the header has no name", "name each column"]),
    ("x,y\n1,2\n" + "9" * 200_000 + ",3\n", ["line 3", "field larger than field limit", "is this the right file?"]),
], ids=short_id)
def test_bad_csv_names_the_row_and_column(cli, runs, csv_file, content, words):
    code, _, err = cli("data=csv", f"data.path={csv_file(content)}", "data.val_fraction=null", "train.epochs=2")
    assert code == 2
    for w in words:
        assert w in err
    assert runs() == []


def test_a_csv_path_that_is_a_folder_or_unreadable_is_refused_by_what_it_is(cli, runs, tmp_path, csv_file, monkeypatch):
    code, _, err = cli("data=csv", f"data.path={tmp_path}", "train.epochs=2")
    assert code == 2 and "is a folder, not a file" in err and "Traceback" not in err
    locked, read = csv_file(GOOD_CSV), Path.read_bytes

    def read_bytes(self):  # what a mode of 000 does to a user who is not root (CI runs as root)
        if self == Path(locked):
            raise PermissionError(13, "Permission denied", str(self))
        return read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    code, _, err = cli("data=csv", f"data.path={locked}", "train.epochs=2")
    assert code == 2 and "cannot be read (Permission denied)" in err and "Traceback" not in err
    assert runs() == []


@pytest.mark.parametrize("args,words", [
    (["data.target=zzz"], ["data.target='zzz' is not a column", "['a', 'b', 'y']"]),
    (["data.inputs=[a,zzz]"], ["data.inputs names ['zzz']"]),
    (["data.inputs=[a,a]"], ["data.inputs names 'a' 2 times", "list each column once"]),
    (["data.target=y", "data.inputs=[a,b,a]"], ["data.inputs names 'a' 2 times"]),
    (["data.path=/no/such/file.csv"], ["data.path='/no/such/file.csv'", "no such file"]),
])
def test_bad_csv_settings(cli, runs, csv_file, args, words):
    path = csv_file(GOOD_CSV)
    overrides = ["data=csv", f"data.path={path}", "data.val_fraction=null", "train.epochs=2"]
    code, _, err = cli(*overrides, *args)
    assert code == 2
    for w in words:
        assert w in err
    assert runs() == []


def test_csv_without_path_says_how(cli, runs):
    code, _, err = cli("data=csv", "train.epochs=2")
    assert code == 2 and "data.path" in err and "data.path=/path/to/file.csv" in err
    assert runs() == []


def test_good_csv_trains_and_records_its_digest(cli, runs, csv_file):
    import hashlib

    path = csv_file(GOOD_CSV)
    code, out, err = cli("data=csv", f"data.path={path}", "data.target=y", "data.val_fraction=0.4",
                         "data.scaling=standardize", "train.epochs=5", "tracking.plots=none")
    assert code == 0, err
    (run,) = runs()
    assert run.data.tags["gradlab.data.sha256"] == hashlib.sha256(GOOD_CSV.encode()).hexdigest()
    assert run.data.params["n_train"] == "3" and run.data.params["n_val"] == "2"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"csv-training", "csv-validation"}


@pytest.mark.parametrize("args", [
    ["data=bias_column", "data.scaling=standardize"],  # the ones column is appended after scaling
    ["model=rosenbrock", "data=none", "optimizer=gd", "optimizer.lr=1e-3"],  # no split or scaling to undo
    ["data=noisy_line", "train.batch_size=8", "optimizer=gd", "optimizer.lr=1e-4"],
    ["data=line", "model=quadratic", "optimizer=adam"],
])
def test_other_datasets_do_not_inherit_the_thermometers_settings(cli, runs, args):
    code, _, err = cli(*args, "train.epochs=3", "tracking.plots=none")
    assert code == 0, err
    (run,) = runs()
    if "data=line" in args:
        assert run.data.params["data.scaling"] == "none" and run.data.params["data.val_fraction"] == "None"


def test_csv_defaults_to_raw_inputs_and_no_split(csv_file):
    cfg = compose("data=csv", f"data.path={csv_file(GOOD_CSV)}")
    assert cfg.data.scaling.value == "none" and cfg.data.val_fraction is None
    assert compose().data.scale_factor == 0.1 and compose().data.val_fraction == 0.2  # the thermometer's own


def test_print_config(cli):
    code, out, _ = cli("--cfg", "job", "optimizer=adam")
    assert code == 0
    assert "name: adam" in out and "betas:" in out


def test_help_describes_gradlab_before_hydras_flags(cli):
    code, out, err = cli("--help")
    assert code == 0, err
    assert out.startswith("gradlab: train and compare")
    for command in ("rerun RUN_ID", "reap", "gradlab ui"):
        assert command in out
    for group in GROUPS:  # every real option of every group, and no schema
        line = next(line for line in out.splitlines() if line.strip().startswith(group + " "))
        assert sorted(line.split(None, 1)[1].split(", ")) == sorted(options(group))
    for folder in (CONF / "experiment", ROOT / "sweeps"):
        assert all(p.stem in out for p in folder.glob("*.yaml"))
    assert "_schema" not in out and "keys epochs, batch_size" in out
    assert out.index("gradlab: train") < out.index("Hydra's flags") < out.index("--multirun")


@pytest.mark.parametrize("args", [["reap", "--bogus"], ["reap", "--dry-run", "extra"], ["ui", "--prot", "8"]])
def test_a_command_with_a_flag_it_does_not_take_says_its_usage(cli, runs, args):
    """`gradlab reap --bogus` ignored the flag and reaped for real."""
    got, _, err = cli(*args)
    assert got == 2 and err.startswith(f"gradlab: error: usage: gradlab {args[0]}") and err.count("\n") == 1
    assert runs() == []


@pytest.mark.parametrize("overrides", [("optimizer=adam", "optimizer.lr=0.1", "schedule=cosine"),
                                       ("experiment=mlp_sigmoid",), ("data=teacher", "model=mlp")])
def test_to_typed_reads_a_config_with_its_hydra_node_as_omegaconf_reads_it_without(overrides):
    """A sweep's jobs are typed without copying their configs (the hydra node left in place): the
    same Config as OmegaConf.to_object of the config with the node deleted, and the same error for
    a key the schema lacks."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from gradlab.config import ConfigError, register_configs, to_typed

    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
        bad = hydra_compose("config", overrides=[*overrides, "+extra=1"], return_hydra_config=True)
    bare = cfg.copy()
    with open_dict(bare):
        del bare["hydra"]
    assert to_typed(cfg) == OmegaConf.to_object(bare) == compose(*overrides)
    assert "hydra" in cfg  # read, not changed
    with pytest.raises(ConfigError, match="extra"):
        to_typed(bad)
