"""Issue 23, second hardening pass: outputs that would overwrite inputs, damaged teacher caches, impossible
numbers, repeated recipe keys, corrupt sweep state, model weights and checkpoints, empty corpora, tiny
evaluations.

Each case is a mistake a user makes (or a fault a disk makes) and must give one clear line naming the
file, line or key, exit code 2 and nothing written or lost. The command-line cases call
:func:`imascl_ray.cli.main` in this process (no Ray is started by any of them).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from imascl_ray.cli import main
from imascl_ray.config import load_config
from imascl_ray.errors import InputError

HEADER = "src_lang\ttgt_lang\tsrc\ttgt\n"
ROWS = "".join(
    f"en\tfr\tOpen the selected file number {i}\tOuvrir le fichier choisi numero {i}\n" for i in range(30)
)


def run_cli(capsys, argv: list[str]) -> tuple[int, list[str], str]:
    """Exit code, stderr lines and stdout of ``imascl-ray ARGV`` run in this process."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def one_error_line(capsys, argv: list[str]) -> str:
    """The single stderr line of a command that must stop on bad input with exit code 2."""
    code, lines, _ = run_cli(capsys, argv)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"imascl-ray {argv[0]}: error: "), lines[0]
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def fresh_logging(monkeypatch):
    """The package logger as :func:`imascl_ray.logs.configure_logging` first finds it, in every test: its
    handler then writes to this test's captured stderr (so log lines count), and caplog sees records."""
    logger = logging.getLogger("imascl_ray")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMASCL_DEBUG", raising=False)
    return tmp_path


# ---------------------------------------------------------------------------------------------------------
# 2. corpus prepare never writes over its input or writes two outputs to one file


@pytest.mark.parametrize(
    ("extra", "first", "second"),
    [
        (["--train-out", "in.tsv"], "--train-out", "input"),
        (["--train-out", "./sub/../in.tsv"], "--train-out", "input"),
        (["--train-out", "link.tsv"], "--train-out", "input"),
        (
            ["--train-out", "out.tsv", "--validation", "5", "--validation-out", "out.tsv"],
            "--validation-out",
            "--train-out",
        ),
        (
            ["--train-out", "out.tsv", "--validation", "5", "--validation-out", "in.tsv"],
            "--validation-out",
            "input",
        ),
        (
            [
                "--train-out",
                "out.tsv",
                "--evaluation",
                "eval.tsv",
                "--validation",
                "5",
                "--validation-out",
                "./eval.tsv",
            ],
            "--validation-out",
            "--evaluation",
        ),
    ],
    ids=[
        "train-is-input",
        "train-is-input-spelled-otherwise",
        "train-is-a-link-to-input",
        "validation-is-train",
        "validation-is-input",
        "validation-is-an-evaluation-set",
    ],
)
def test_prepare_refuses_an_output_that_is_an_input_or_another_output(workdir, capsys, extra, first, second):
    (workdir / "in.tsv").write_text(HEADER + ROWS, encoding="utf-8")
    (workdir / "eval.tsv").write_text(HEADER + "en\tfr\tsomething else\tautre chose\n", encoding="utf-8")
    (workdir / "sub").mkdir()
    (workdir / "link.tsv").symlink_to(workdir / "in.tsv")
    before = files_under(workdir)
    line = one_error_line(capsys, ["corpus", "prepare", "in.tsv", *extra])
    assert first in line and second in line, line
    shared = {"input": "in.tsv", "--train-out": "out.tsv", "--evaluation": "eval.tsv"}[second]
    assert str((workdir / shared).resolve()) in line, line  # the one file both names mean
    assert files_under(workdir) == before  # nothing written, the input untouched


# ---------------------------------------------------------------------------------------------------------
# 8. an empty corpus is refused, by corpus prepare and by train


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("in.tsv", HEADER),
        ("in.jsonl", ""),
        ("in.tsv", HEADER + "en\tfr\t \tOuvrir\nen\tfr\tOpen\t\n"),
    ],
    ids=["tsv-header-only", "jsonl-empty", "every-row-has-an-empty-sentence"],
)
def test_prepare_refuses_an_empty_corpus(workdir, capsys, name, content):
    (workdir / name).write_text(content, encoding="utf-8")
    before = files_under(workdir)
    line = one_error_line(capsys, ["corpus", "prepare", name, "--train-out", "out.tsv"])
    assert f"{name}: no sentence pairs" in line, line
    assert files_under(workdir) == before


def test_prepare_refuses_a_parquet_corpus_without_rows(workdir, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["src_lang", "tgt_lang", "src", "tgt"]
    pq.write_table(pa.table({n: pa.array([], type=pa.string()) for n in names}), workdir / "in.parquet")
    line = one_error_line(capsys, ["corpus", "prepare", "in.parquet", "--train-out", "out.tsv"])
    assert "in.parquet: no sentence pairs" in line, line
    assert not (workdir / "out.tsv").exists()


def test_prepare_refuses_when_filtering_leaves_no_training_pair(workdir, capsys):
    (workdir / "in.tsv").write_text(HEADER + ROWS, encoding="utf-8")
    (workdir / "eval.tsv").write_text(HEADER + ROWS, encoding="utf-8")  # every pair is an evaluation pair
    line = one_error_line(
        capsys, ["corpus", "prepare", "in.tsv", "--evaluation", "eval.tsv", "--train-out", "out.tsv"]
    )
    assert "in.tsv: no training pairs left" in line, line
    assert not (workdir / "out.tsv").exists()


def test_train_refuses_an_empty_corpus_naming_the_file(workdir):
    """``train`` reads its corpus in the driver (preparation, no Ray needed): the file is named."""
    from imascl_ray.preparation.splits import load_source_corpus

    (workdir / "empty.tsv").write_text(HEADER, encoding="utf-8")
    config = load_config(None, [f"data.corpus={workdir / 'empty.tsv'}", "tracking.output_dir=runs"])
    with pytest.raises(InputError, match=r"empty\.tsv: no sentence pairs"):
        load_source_corpus(config, workdir / "cache")


# ---------------------------------------------------------------------------------------------------------
# 4. every float finite and in range, at config validation and in search spaces


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=nan", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=-.inf", "optim.lr"),
        ("loss.teacher_tau=.nan", "loss.teacher_tau"),
        ("loss.tau=.inf", "loss.tau"),
        ("loss.lam=.inf", "loss.lam"),
        ("loss.margin=.nan", "loss.margin"),
        ("optim.betas=[1.5,2]", "optim.betas"),
        ("optim.betas=[0.9,1.0]", "optim.betas"),
        ("optim.betas=[-0.1,0.9]", "optim.betas"),
        ("optim.betas=[.nan,0.9]", "optim.betas"),
        ("optim.weight_decay=-0.01", "optim.weight_decay"),
        ("optim.weight_decay=.inf", "optim.weight_decay"),
        ("optim.max_grad_norm=-1", "optim.max_grad_norm"),
        ("optim.max_grad_norm=0", "optim.max_grad_norm"),
        ("optim.warmup_ratio=.nan", "optim.warmup_ratio"),
        ("scaling.cpus_per_worker=.inf", "scaling.cpus_per_worker"),
    ],
)
def test_an_impossible_number_is_refused_naming_its_key(capsys, workdir, override, key):
    with pytest.raises(InputError, match=rf"\b{key}\b"):
        load_config(None, [override])
    line = one_error_line(capsys, ["config", "quickstart", override])
    assert key in line, line


def test_a_nan_in_a_recipe_names_the_file_and_line(workdir):
    (workdir / "run.yaml").write_text("optim:\n  lr: .nan\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"run\.yaml, line 2: optim\.lr must be a finite number"):
        load_config(workdir / "run.yaml")


def test_the_shipped_defaults_are_still_accepted():
    config = load_config(None, ["optim.betas=[0.0,0.999]", "optim.weight_decay=0", "optim.max_grad_norm=0.5"])
    assert config.optim.betas == (0.0, 0.999) and math.isfinite(config.optim.lr)


SPACE = """
base: quickstart
search:
  {entry}
{extra}
"""


@pytest.mark.parametrize(
    ("entry", "extra", "needle"),
    [
        ("loss.tau: {uniform: [.nan, 0.2]}", "", "loss.tau"),
        ("loss.tau: {uniform: [0.05, .inf]}", "", "loss.tau"),
        ("optim.lr: {loguniform: [1e-5, .nan]}", "", "optim.lr"),
        ("optim.lr: {loguniform: ['nan', 1e-3]}", "", "optim.lr"),
        (
            "loss.tau: {uniform: [0.05, 0.2]}",
            "scheduler:\n  name: asha\n  max_t: 10\n  reduction_factor: .nan",
            "reduction_factor",
        ),
        ("loss.tau: {uniform: [0.05, 0.2]}", "resources:\n  trial_cpus: .inf", "trial_cpus"),
    ],
)
def test_a_non_finite_search_bound_is_refused_when_the_space_loads(workdir, entry, extra, needle):
    from imascl_ray.tune.space import load_space

    path = workdir / "space.yaml"
    path.write_text(SPACE.format(entry=entry, extra=extra).lstrip("\n"), encoding="utf-8")
    with pytest.raises(InputError, match=r"space\.yaml, line \d+: ") as raised:
        load_space(path)
    assert needle in str(raised.value) and "finite" in str(raised.value), raised.value


def test_tune_stops_on_a_nan_bound_before_any_work(workdir, capsys):
    (workdir / "space.yaml").write_text(
        SPACE.format(entry="loss.tau: {uniform: [.nan, 0.2]}", extra="").lstrip()
    )
    line = one_error_line(capsys, ["tune", "space.yaml", "tracking.output_dir=runs"])
    assert "space.yaml, line 3" in line and "loss.tau" in line, line
    assert not (workdir / "runs").exists()  # no teacher cache, no MLflow store


# ---------------------------------------------------------------------------------------------------------
# 6. repeated keys in a recipe (any depth) are refused with the file and line; one YAML loader for both


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("loss:\n  tau: 0.1\n  tau: 0.2\n", 3, "tau"),
        ("loss:\n  tau: 0.1\noptim:\n  lr: 1e-5\nloss:\n  lam: 1\n", 5, "loss"),
        ("data:\n  languages: [en, fr]\n  exclude:\n    - {a: 1, a: 2}\n", 4, "a"),
    ],
    ids=["key-in-a-section", "repeated-section", "deep-in-a-value"],
)
def test_a_repeated_recipe_key_names_the_file_and_line(workdir, capsys, text, line, key):
    (workdir / "run.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=rf"run\.yaml, line {line}: '{key}' appears twice"):
        load_config(workdir / "run.yaml")
    message = one_error_line(capsys, ["config", "run.yaml"])
    assert f"line {line}: '{key}' appears twice" in message


def test_spaces_and_recipes_share_the_repeated_key_check(workdir):
    from imascl_ray.tune.space import load_space

    (workdir / "space.yaml").write_text(
        "base: quickstart\nsearch:\n  loss.tau: {uniform: [0.05, 0.2]}\n"
        "overrides:\n  loss:\n    lam: 1\n    lam: 2\n"
    )
    with pytest.raises(InputError, match=r"space\.yaml, line 7: 'lam' appears twice"):
        load_space(workdir / "space.yaml")


# ---------------------------------------------------------------------------------------------------------
# 7. a corrupt sweep.json, a corrupt model.safetensors: one line naming the file


@pytest.mark.parametrize(
    "content", ['{"overrides": [', "[1, 2]", "\xff\xfe not json"], ids=["truncated", "a-list", "binary"]
)
def test_resuming_a_sweep_with_a_corrupt_state_file_names_it(workdir, capsys, content):
    sweep = workdir / "sweep-folder"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(content, encoding="utf-8")
    line = one_error_line(capsys, ["tune", "--resume", str(sweep)])
    assert str(sweep / "sweep.json") in line, line


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from imascl_ray.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def damaged_copy(model: Path, target: Path, how: str) -> Path:
    shutil.copytree(model, target)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x00\x01 not safetensors" * 8)
    return weights


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_eval_of_a_model_with_corrupt_weights_names_the_file(workdir, capsys, tiny_model, how):
    weights = damaged_copy(tiny_model, workdir / "broken", how)
    (workdir / "pairs.tsv").write_text(HEADER + ROWS, encoding="utf-8")
    line = one_error_line(capsys, ["eval", "broken", "--pairs", "pairs.tsv", "--output", "scores.json"])
    assert "model.safetensors" in line and str(weights.parent.name) in line, line
    assert not (workdir / "scores.json").exists()


def test_train_with_a_student_with_corrupt_weights_names_the_file_before_ray(workdir, capsys, tiny_model):
    damaged_copy(tiny_model, workdir / "broken", "truncated")
    line = one_error_line(capsys, ["train", "quickstart", "model.name=broken", "tracking.output_dir=runs"])
    assert line.startswith("imascl-ray train: error: model.name: ") and "model.safetensors" in line, line
    assert not (workdir / "runs").exists()


def test_a_sound_model_folder_passes_the_weights_check(tiny_model):
    from imascl_ray.commands.eval import check_model_reference

    check_model_reference(str(tiny_model))  # no error


# ---------------------------------------------------------------------------------------------------------
# 3. the teacher cache: size and checksum recorded, verified before use, rebuilt when damaged


SENTENCES = [f"the cat opens file {i}" for i in range(23)] + ["le chat", "la maison"]


@pytest.fixture()
def teacher(tiny_model):
    from imascl_ray.teacher import Teacher

    return Teacher.from_pretrained(tiny_model)


def build(teacher, folder: Path):
    from imascl_ray.teacher import TeacherCache

    return TeacherCache.build(teacher, SENTENCES, folder, batch_size=4, show_progress=False)


def test_a_cache_records_the_size_and_checksum_of_its_embeddings(tmp_path, teacher):
    import hashlib

    cache = build(teacher, tmp_path)
    meta = json.loads((cache.directory / "meta.json").read_text())
    embeddings = cache.directory / "embeddings.npy"
    assert meta["embeddings_bytes"] == embeddings.stat().st_size
    assert meta["embeddings_sha256"] == hashlib.sha256(embeddings.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte", "meta-garbage", "embeddings-gone"])
def test_a_damaged_cache_is_rebuilt_saying_so(tmp_path, teacher, caplog, damage):
    first = build(teacher, tmp_path)
    expected = np.array(first.embeddings)
    folder = first.directory
    del first
    embeddings = folder / "embeddings.npy"
    if damage == "truncated":
        data = embeddings.read_bytes()
        embeddings.write_bytes(data[: len(data) - 100])
    elif damage == "flipped-byte":
        data = bytearray(embeddings.read_bytes())
        data[-5] ^= 0xFF
        embeddings.write_bytes(bytes(data))
    elif damage == "meta-garbage":
        (folder / "meta.json").write_text("{not json")
    else:
        embeddings.unlink()
    with caplog.at_level(logging.INFO, logger="imascl_ray"):
        again = build(teacher, tmp_path)
    damaged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(damaged) == 1 and str(folder) in damaged[0] and "rebuilding" in damaged[0], damaged
    assert not again.reused and again.directory == folder
    np.testing.assert_array_equal(np.asarray(again.embeddings), expected)
    assert build(teacher, tmp_path).reused  # and the rebuilt cache is sound


def test_opening_a_truncated_cache_is_an_error_naming_the_folder_not_an_mmap_failure(tmp_path, teacher):
    from imascl_ray.teacher import TeacherCache

    folder = build(teacher, tmp_path).directory
    embeddings = folder / "embeddings.npy"
    embeddings.write_bytes(embeddings.read_bytes()[:200])
    with pytest.raises(InputError, match=str(folder)):
        TeacherCache.open(folder)


def test_a_damaged_cache_that_cannot_be_removed_stops_with_one_line_naming_the_folder(
    tmp_path, teacher, monkeypatch
):
    import imascl_ray.teacher as teacher_module

    folder = build(teacher, tmp_path).directory
    (folder / "embeddings.npy").write_bytes(b"\x93NUMPY broken")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(teacher_module.os, "rename", refuse)
    with pytest.raises(InputError, match=rf"{folder}: .*damaged.*delete") as raised:
        build(teacher, tmp_path)
    assert "\n" not in str(raised.value)


def test_an_interrupted_build_leaves_no_cache_that_looks_complete(tmp_path, teacher):
    from imascl_ray.teacher import TeacherCache, embed_in_process

    def interrupted(teacher, sentences, shards, batch_size):
        for number, item in enumerate(embed_in_process(teacher, sentences, shards, batch_size)):
            if number == 1:
                raise KeyboardInterrupt
            yield item

    with pytest.raises(KeyboardInterrupt):
        TeacherCache.build(
            teacher,
            SENTENCES,
            tmp_path,
            batch_size=4,
            shard_size=8,
            show_progress=False,
            embedder=interrupted,
        )
    assert not list(tmp_path.glob("teacher-*"))  # only the dot-named shard folder of the resumable build
    assert build(teacher, tmp_path).embeddings.shape == (len(SENTENCES), teacher.embedding_dim)


# ---------------------------------------------------------------------------------------------------------
# 9 (part). eval on a handful of pairs warns that the accuracy means little


def test_eval_on_fewer_than_ten_candidates_warns_once(workdir, capsys, tiny_model):
    rows = "".join(f"en\tfr\tOpen the file number {i}\tOuvrir le fichier numero {i}\n" for i in range(4))
    (workdir / "small.tsv").write_text(HEADER + rows + ROWS.replace("en\tfr", "en\tru"), encoding="utf-8")
    code, lines, _ = run_cli(capsys, ["eval", str(tiny_model), "--pairs", "small.tsv"])
    assert code == 0, lines
    warnings = [line for line in lines if "means little" in line]
    assert len(warnings) == 1, lines
    assert "en-fr" in warnings[0] and "4" in warnings[0] and "en-ru" not in warnings[0], warnings


def test_eval_on_enough_candidates_does_not_warn(workdir, capsys, tiny_model):
    (workdir / "pairs.tsv").write_text(HEADER + ROWS, encoding="utf-8")
    code, lines, _ = run_cli(capsys, ["eval", str(tiny_model), "--pairs", "pairs.tsv"])
    assert code == 0, lines
    assert not [line for line in lines if "means little" in line], lines


# ---------------------------------------------------------------------------------------------------------
# 5. errors that a restart cannot cure are InputErrors, and stop a Ray Train run unretried


def saved_checkpoint(folder: Path):
    import torch

    from imascl_ray.engine.checkpoint import save_checkpoint

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    save_checkpoint(folder, **objects, scaler=torch.amp.GradScaler("cpu"), position={"global_step": 2})
    return objects


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", lambda data: data[:100]),
        ("model.safetensors", lambda data: b"not a safetensors file"),
        ("training_state.pt", lambda data: data[: len(data) // 2]),
        ("training_state.pt", lambda data: b"garbage" * 10),
    ],
    ids=["weights-truncated", "weights-garbage", "state-truncated", "state-garbage"],
)
def test_a_damaged_checkpoint_is_an_input_error_naming_the_file(tmp_path, name, damage):
    from imascl_ray.engine.checkpoint import load_checkpoint

    objects = saved_checkpoint(tmp_path)
    (tmp_path / name).write_bytes(damage((tmp_path / name).read_bytes()))
    with pytest.raises(InputError) as caught:
        load_checkpoint(tmp_path, **objects)
    message = str(caught.value)
    assert str(tmp_path / name) in message and "tracking.run_name" in message, message
    assert "\n" not in message


def test_a_checkpoint_of_another_model_is_an_input_error(tmp_path):
    import torch

    from imascl_ray.engine.checkpoint import load_checkpoint

    saved_checkpoint(tmp_path)
    with pytest.raises(InputError, match=r"size mismatch.*tracking\.run_name"):
        load_checkpoint(tmp_path, model=torch.nn.Linear(3, 2))


def test_the_controller_callback_stops_on_an_input_error_and_leaves_crashes_to_the_retries():
    import ray.train

    from imascl_ray.train.failures import StopOnInputError, input_error_of

    callback = StopOnInputError()
    callback.after_exception(None, {0: RuntimeError("gloo: connection reset"), 1: OSError("killed")})
    bad = InputError("corpus.tsv: line 3: no tab")
    with pytest.raises(InputError) as caught:
        callback.after_exception(None, {0: RuntimeError("peer gone"), 1: bad})
    assert caught.value is bad
    # What fit() raises on the driver, and what the trainer hands on.
    assert input_error_of(ray.train.ControllerError(bad)) is bad
    assert input_error_of(ray.train.WorkerGroupError("x", {0: RuntimeError(), 1: bad})) is bad
    assert input_error_of(ray.train.WorkerGroupError("x", {0: RuntimeError("crash")})) is None
    assert input_error_of(ray.train.ControllerError(RuntimeError("startup"))) is None


def test_ray_logs_no_traceback_of_an_input_error_but_still_of_a_crash(caplog):
    from imascl_ray.train.failures import CONTROLLER_LOGGER, quiet_input_errors

    quiet_input_errors(CONTROLLER_LOGGER)
    quiet_input_errors(CONTROLLER_LOGGER)  # once only
    logger = logging.getLogger(CONTROLLER_LOGGER)
    assert len(logger.filters) == 1
    for error in (InputError("bad input"), RuntimeError("a crash")):
        try:
            raise error
        except Exception:
            logger.exception("Error in control loop iteration")
    assert [record.exc_info[1].args[0] for record in caplog.records] == ["a crash"]


def test_the_ray_loggers_silenced_for_input_errors_still_exist():
    """Ray 2.60's names (the pin's check): if they move, its tracebacks of an InputError come back."""
    import importlib
    import inspect

    from imascl_ray.train.failures import CONTROLLER_LOGGER, WORKER_ERROR_LOGGER

    worker = importlib.import_module(WORKER_ERROR_LOGGER)
    assert "Error in training function" in inspect.getsource(worker.construct_user_exception_with_traceback)
    controller = importlib.import_module(CONTROLLER_LOGGER)
    loop = inspect.getsource(controller.TrainController._run_control_loop_iteration)
    assert 'logger.exception("Error in control loop iteration' in loop
    assert worker.logger.name == WORKER_ERROR_LOGGER and controller.logger.name == CONTROLLER_LOGGER


# ---------------------------------------------------------------------------------------------------------
# 9 (rest). the run name and the output folder are checked before Ray starts


@pytest.fixture()
def no_ray(monkeypatch):
    """``imascl-ray train`` may not get as far as starting Ray: it fails the test if it tries."""
    import contextlib

    from imascl_ray.train import session

    @contextlib.contextmanager
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the run's name and folders were checked")
        yield

    monkeypatch.setattr(session, "ray_session", refuse)


@pytest.fixture()
def small_recipe(workdir, tiny_model):
    (workdir / "corpus.tsv").write_text(HEADER + ROWS, encoding="utf-8")
    return ["train", "quickstart", f"model.name={tiny_model}", "data.corpus=corpus.tsv"]


@pytest.mark.parametrize(
    "name", ["a/b", "../up", ".hidden", "with space", "-dash", "x" * 129, "semi;colon", "star*"]
)
def test_a_run_name_that_is_no_folder_name_is_one_line_before_ray(capsys, no_ray, small_recipe, name):
    started = time.monotonic()
    line = one_error_line(capsys, [*small_recipe, f"tracking.run_name={name}"])
    assert "tracking.run_name" in line and "is not a run name" in line, line
    assert time.monotonic() - started < 5


def test_an_output_folder_under_a_file_is_one_line_before_ray(capsys, no_ray, small_recipe, workdir):
    (workdir / "a-file").write_text("x")
    line = one_error_line(capsys, [*small_recipe, "tracking.output_dir=a-file/out"])
    assert "tracking.output_dir" in line and "a-file is a file" in line, line
    line = one_error_line(capsys, [*small_recipe, "tracking.output_dir=runs", "tracking.storage_path=a-file"])
    assert "tracking.storage_path" in line, line
    assert not (workdir / "runs").exists()  # nothing written


def test_an_unwritable_output_folder_is_one_line_before_ray(
    capsys, no_ray, small_recipe, workdir, monkeypatch
):
    import os

    (workdir / "locked").mkdir()
    real_access = os.access  # root may write anywhere: the test plays a user who may not

    def access(path, mode):
        return Path(path).name != "locked" and real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    line = one_error_line(capsys, [*small_recipe, "tracking.output_dir=locked/out"])
    assert "tracking.output_dir: locked/out" in line and "may not be written" in line, line


def test_an_existing_run_name_without_resume_is_one_line_before_ray(capsys, no_ray, small_recipe, workdir):
    run_dir = workdir / "imascl-quickstart" / "runs" / "mine"  # the recipe's output_dir
    run_dir.mkdir(parents=True)
    (run_dir / "mlflow-run.json").write_text('{"run_id": "abc"}\n')
    before = files_under(workdir / "imascl-quickstart")
    started = time.monotonic()
    line = one_error_line(capsys, [*small_recipe, "tracking.run_name=mine"])
    assert "run 'mine' exists already" in line and "--resume" in line, line
    assert time.monotonic() - started < 5
    assert files_under(workdir / "imascl-quickstart") == before


def test_tune_with_an_output_folder_under_a_file_is_one_line_before_ray(workdir, capsys, monkeypatch):
    from imascl_ray.train import session

    monkeypatch.setattr(session, "ray_session", None)  # calling it would fail the test
    (workdir / "a-file").write_text("x")
    (workdir / "space.yaml").write_text(
        SPACE.format(entry="loss.tau: {uniform: [0.05, 0.2]}", extra="").lstrip()
    )
    line = one_error_line(capsys, ["tune", "space.yaml", "tracking.output_dir=a-file/out"])
    assert "tracking.output_dir" in line and "a-file is a file" in line, line


def test_a_good_run_name_and_folder_pass_the_checks(workdir):
    from imascl_ray.commands.train import check_run_folder

    for name in ("priority-tms-en-xx-20261201-101500-3f9a", "run_1.2+lr=1e-3"):
        config = load_config(None, [f"tracking.run_name={name}", "tracking.output_dir=new/deeper"])
        check_run_folder(config, resume=False)
    assert not (workdir / "new").exists()


def test_nothing_here_started_ray():
    import sys

    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
