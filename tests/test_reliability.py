"""Reliability (issue 11, first part): the bad-input battery across every command, and the safety checks.

Bad input → exit code 2, exactly one line on stderr naming the input and the problem, no traceback,
and nothing the user already had overwritten, deleted or left half-written (the whole working folder
is compared byte for byte before and after). Cheap inputs: a 10-person world and tiny random Hugging
Face Llamas with its tokenizer; nothing here trains a model except the one run that proves a config
cannot redirect output.
"""

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hf_models import make_hf_model
from unlearn_jax.cli import main

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn_jax"
CONTEXT = 64  # max_position_embeddings of the tiny models: a 200-word record does not fit


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """A 10-person world, its QA/text files, and model directories good and broken in every way."""
    from unlearn_jax.data.world import build_world

    root = tmp_path_factory.mktemp("reliability")
    world = root / "world"
    manifest = build_world(world, people=10, requests=1)
    tokenizer = world / "tokenizer"
    vocab = manifest["tokenizer"]["vocab_size"]
    special = dict(bos_token_id=2, eos_token_id=3, pad_token_id=0, max_position_embeddings=CONTEXT)

    def model_dir(name: str, vocab_size: int, with_tokenizer: bool = True) -> Path:
        path = root / name
        make_hf_model("llama", vocab_size=vocab_size, **special).save_pretrained(path)
        if with_tokenizer:
            shutil.copytree(tokenizer, path, dirs_exist_ok=True)
        return path

    paths = {"world": world, "model": model_dir("model", vocab), "vocab_small": model_dir("vocab_small", vocab // 2),
             "no_tokenizer": model_dir("no_tokenizer", vocab, with_tokenizer=False)}
    gpt2 = shutil.copytree(paths["model"], root / "gpt2")
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4,
                                                  "vocab_size": vocab}))
    missing = shutil.copytree(paths["model"], root / "no_weights")
    (missing / "model.safetensors").unlink()
    truncated = shutil.copytree(paths["model"], root / "truncated")
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    qa = [json.loads(line) for line in (world / "retain.jsonl").read_text().splitlines()[:8]]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    (root / "text.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["prompt"] + " " + r["answer"]})
                                             + "\n" for r in qa))
    return {**paths, "gpt2": gpt2, "no_weights": missing, "truncated": truncated, "qa": root / "qa.jsonl",
            "text": root / "text.jsonl"}


# Setups write into the case's own folder ({tmp}); everything in it must be byte-identical afterwards.
def write(name: str, text: str):
    return lambda tmp: (tmp / name).write_text(text)


def keep_dir(name: str):
    """An output directory the user already has, with a file in it."""
    def setup(tmp):
        (tmp / name).mkdir()
        (tmp / name / "keep.txt").write_text("mine")
    return setup


def read_only(tmp):
    (tmp / "ro").mkdir()
    (tmp / "ro" / "keep.txt").write_text("mine")
    (tmp / "ro").chmod(0o555)


QA_LINE = json.dumps({"id": "a", "prompt": "Where was Mana Devik born?", "answer": "Caldris"}) + "\n"
LONG = json.dumps({"id": "long", "prompt": " ".join(["Where was Mana Devik born?"] * 40), "answer": "Caldris"}) + "\n"
UNLEARN = ["unlearn", "--model", "{model}", "--forget", "{qa}", "--retain", "{qa}", "--method", "graddiff",
           "--out", "{tmp}/run"]
SEQUENTIAL = ["sequential", "--model", "{model}", "--requests", "{qa}", "--retain", "{qa}", "--method", "graddiff",
              "--out", "{tmp}/seq"]
SCORE = ["score", "--model", "{model}", "--data", "{qa}", "--out", "{tmp}/s.jsonl"]
AUDIT = ["audit", "--model", "{model}", "--original", "{model}", "--forget", "{qa}", "--retain", "{qa}",
         "--out", "{tmp}/audit"]
EVAL = ["eval", "--model", "{model}", "--data", "{qa}", "--out", "{tmp}/e.json"]
EXPORT = ["export", "--model", "{model}", "--out", "{tmp}/hf"]


def with_(base: list[str], **changes: str) -> list[str]:
    """``base`` with ``--flag value`` pairs replaced (or appended); underscores in names become dashes."""
    args = list(base)
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def without(base: list[str], flag: str) -> list[str]:
    i = base.index(flag)
    return base[:i] + base[i + 2:]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    expect: tuple[str, ...]  # substrings of the one stderr line: the input named, then the problem
    setup: object = None


CASES = [
    # world
    Case("world-people-range", ["world", "--out", "{tmp}/w", "--people", "5"], ("--people", "between 10 and 2000")),
    Case("world-forget-frac", ["world", "--out", "{tmp}/w", "--forget-frac", "0.9"], ("--forget-frac", "(0, 0.5]")),
    Case("world-exposure", ["world", "--out", "{tmp}/w", "--exposure", "8,x"], ("--exposure", "integers")),
    Case("world-out-is-file", ["world", "--out", "{tmp}/w"], ("/w", "not a directory"), write("w", "mine")),
    Case("world-out-not-empty", ["world", "--out", "{tmp}/w"], ("/w", "not empty", "--force"), keep_dir("w")),
    Case("world-read-only", ["world", "--out", "{tmp}/ro/w"], ("/ro", "permission denied"), read_only),
    # pretrain
    Case("pretrain-not-a-world", ["pretrain", "--data", "{tmp}", "--out", "{tmp}/run"], ("not a world directory",)),
    Case("pretrain-preset", ["pretrain", "--data", "{world}", "--out", "{tmp}/run", "--preset", "huge"],
         ("--preset 'huge'", "--preset 'huge': choose one of")),
    Case("pretrain-exclude", ["pretrain", "--data", "{world}", "--out", "{tmp}/run", "--exclude", "bogus"],
         ("--exclude", "unknown split 'bogus'")),
    Case("pretrain-steps-0", ["pretrain", "--data", "{world}", "--out", "{tmp}/run", "--steps", "0"],
         ("--steps", ">= 1")),
    Case("pretrain-mesh", ["pretrain", "--data", "{world}", "--out", "{tmp}/run", "--mesh", "data=3"],
         ("--mesh 'data=3'", "3 devices but 8 are available")),
    Case("pretrain-out-is-file", ["pretrain", "--data", "{world}", "--out", "{tmp}/run"], ("--out", "is a file"),
         write("run", "mine")),
    # unlearn: data
    Case("unlearn-malformed-jsonl", with_(UNLEARN, forget="{tmp}/bad.jsonl"),
         ("bad.jsonl: line 2", "malformed JSON"), write("bad.jsonl", QA_LINE + '{"prompt": "q", \n')),
    Case("unlearn-missing-field", with_(UNLEARN, forget="{tmp}/bad.jsonl"),
         ("bad.jsonl: line 1", "'answer' is missing"), write("bad.jsonl", '{"id": "a", "prompt": "q"}\n')),
    Case("unlearn-wrong-type", with_(UNLEARN, forget="{tmp}/bad.jsonl"),
         ("bad.jsonl: line 1", "'answer' must be a string, got int"),
         write("bad.jsonl", '{"id": "a", "prompt": "q", "answer": 3}\n')),
    Case("unlearn-empty-file", with_(UNLEARN, forget="{tmp}/empty.jsonl"), ("empty.jsonl", "contains no records"),
         write("empty.jsonl", "")),
    Case("unlearn-too-long", with_(UNLEARN, forget="{tmp}/long.jsonl"),
         ("long.jsonl", "record long", f"longer than the model's context of {CONTEXT}"), write("long.jsonl", LONG)),
    Case("unlearn-text-for-idk", with_(UNLEARN, forget="{text}", method="idk"), ("--method idk", "QA records")),
    Case("unlearn-hf-offline", with_(UNLEARN, forget="hf:locuslab/TOFU:forget10"),
         ("hf:locuslab/TOFU:forget10", "could not load")),
    Case("unlearn-field-map", with_(UNLEARN, field_map="prompt"), ("--field-map", "bad entry 'prompt'")),
    # unlearn: models
    Case("unlearn-vocab-mismatch", with_(UNLEARN, model="{vocab_small}"),
         ("vocab_small", "tokenizer has", "do not belong together")),
    Case("unlearn-gpt2", with_(UNLEARN, model="{gpt2}"), ("gpt2/config.json", "model_type 'gpt2' is not supported")),
    Case("unlearn-no-safetensors", with_(UNLEARN, model="{no_weights}"), ("no_weights", "no model.safetensors")),
    Case("unlearn-truncated-safetensors", with_(UNLEARN, model="{truncated}"),
         ("truncated/model.safetensors", "not a valid safetensors file")),
    Case("unlearn-no-tokenizer", with_(UNLEARN, model="{no_tokenizer}"), ("--model", "no tokenizer files")),
    Case("unlearn-hub-offline", with_(UNLEARN, model="nobody-here/tiny-model"),
         ("nobody-here/tiny-model", "hub is unreachable")),
    Case("unlearn-model-missing", with_(UNLEARN, model="{tmp}/nothing"), ("nothing", "no such model directory")),
    # unlearn: options
    Case("unlearn-method", with_(UNLEARN, method="bogus"), ("--method 'bogus'", "choose one of ga")),
    Case("unlearn-negative-lr", with_(UNLEARN, lr="-0.1"), ("--lr", "positive", "-0.1")),
    Case("unlearn-steps-0", with_(UNLEARN, steps="0"), ("--steps", ">= 1")),
    Case("unlearn-drop-1", with_(UNLEARN, select="loss", drop="1.0"), ("--drop", "[0, 1)")),
    Case("unlearn-drop-without-select", with_(UNLEARN, drop="0.5"), ("--drop", "needs --select")),
    Case("unlearn-mesh", with_(UNLEARN, mesh="data=3"), ("--mesh 'data=3'", "3 devices but 8 are available")),
    Case("unlearn-batch-vs-mesh", with_(UNLEARN, batch_size="3"), ("--batch-size 3", "not divisible")),
    Case("unlearn-no-retain", without(UNLEARN, "--retain"),
         ("--method graddiff needs --retain",)),
    Case("unlearn-stop-when", with_(UNLEARN, stop_when="acc<0.1"), ("--stop-when 'acc<0.1'", "expected METRIC")),
    Case("unlearn-rmu-layer", with_(UNLEARN, method="rmu", rmu_layer="7"), ("--rmu-layer 7", "out of range")),
    Case("unlearn-select", with_(UNLEARN, select="bogus"), ("--select", "invalid choice: 'bogus'")),
    Case("unlearn-steps-not-int", with_(UNLEARN, steps="ten"), ("--steps", "invalid int value: 'ten'")),
    # unlearn: outputs
    Case("unlearn-out-is-file", UNLEARN, ("--out", "is a file"), write("run", "mine")),
    Case("unlearn-out-exists", UNLEARN, ("--out", "already exists", "--force"), keep_dir("run")),
    Case("unlearn-force-bad-data", with_(UNLEARN, forget="{tmp}/bad.jsonl") + ["--force"],
         ("bad.jsonl: line 1", "malformed JSON"),
         lambda tmp: (keep_dir("run")(tmp), write("bad.jsonl", "{oops\n")(tmp))),
    Case("unlearn-read-only", with_(UNLEARN, out="{tmp}/ro/run"), ("/ro", "permission denied"), read_only),
    # unlearn: YAML
    Case("unlearn-yaml-unknown-key", with_(UNLEARN, config="{tmp}/c.yaml"), ("c.yaml", "unknown key(s) methd"),
         write("c.yaml", "methd: ga\n")),
    Case("unlearn-yaml-wrong-type", with_(UNLEARN, config="{tmp}/c.yaml"), ("c.yaml", "steps", "expected int"),
         write("c.yaml", "steps: ten\n")),
    Case("unlearn-yaml-invalid", with_(UNLEARN, config="{tmp}/c.yaml"), ("c.yaml", "not valid YAML"),
         write("c.yaml", "steps: [1,\n")),
    Case("unlearn-yaml-missing", with_(UNLEARN, config="{tmp}/none.yaml"), ("none.yaml", "no such file")),
    # sequential
    Case("sequential-method", with_(SEQUENTIAL, method="bogus"), ("--method 'bogus'", "choose one of")),
    Case("sequential-negative-lr", with_(SEQUENTIAL, lr="-1"), ("--lr", "positive")),
    Case("sequential-no-retain", without(SEQUENTIAL, "--retain"),
         ("--method graddiff needs --retain",)),
    Case("sequential-malformed", with_(SEQUENTIAL, requests="{tmp}/bad.jsonl"), ("bad.jsonl: line 1", "malformed"),
         write("bad.jsonl", "{oops\n")),
    Case("sequential-text", with_(SEQUENTIAL, requests="{text}"), ("--requests", "QA records")),
    Case("sequential-retrained-count", with_(SEQUENTIAL, retrained="{model}") + ["--requests", "{qa}", "{qa}"],
         ("--retrained", "one gold model per request")),
    Case("sequential-too-long", with_(SEQUENTIAL, requests="{tmp}/long.jsonl"),
         ("long.jsonl", f"longer than the model's context of {CONTEXT}"), write("long.jsonl", LONG)),
    Case("sequential-no-tokenizer", with_(SEQUENTIAL, model="{no_tokenizer}"), ("--model", "no tokenizer files")),
    Case("sequential-mesh", with_(SEQUENTIAL, mesh="data=3"), ("--mesh 'data=3'", "3 devices")),
    Case("sequential-trainable", with_(SEQUENTIAL, trainable="no_such_param"), ("--trainable", "matches no")),
    Case("sequential-out-exists", SEQUENTIAL, ("--out", "already exists"), keep_dir("seq")),
    # score
    Case("score-k-0", with_(SCORE, k="0"), ("--k", "(0, 1]")),
    Case("score-k-above-1", with_(SCORE, k="1.5"), ("--k", "(0, 1]")),
    Case("score-out-exists", SCORE, ("--out", "already exists", "--force"), write("s.jsonl", "mine\n")),
    Case("score-out-is-dir", SCORE + ["--force"], ("--out", "is a directory"), keep_dir("s.jsonl")),
    Case("score-read-only", with_(SCORE, out="{tmp}/ro/s.jsonl"), ("/ro", "permission denied"), read_only),
    Case("score-missing-data", with_(SCORE, data="{tmp}/none.jsonl"), ("none.jsonl", "no such file")),
    Case("score-file-type", with_(SCORE, data="{tmp}/d.txt"), ("d.txt", "unknown file type"), write("d.txt", "x\n")),
    Case("score-too-long", with_(SCORE, data="{tmp}/long.jsonl"),
         ("long.jsonl", f"longer than the model's context of {CONTEXT}"), write("long.jsonl", LONG)),
    Case("score-csv-extra-cell", with_(SCORE, data="{tmp}/d.csv"), ("d.csv: line 2", "more cells"),
         write("d.csv", "prompt,answer\nq,a,extra\n")),
    Case("score-json-not-list", with_(SCORE, data="{tmp}/d.json"), ("d.json", "expected a JSON list"),
         write("d.json", '{"prompt": "q"}')),
    Case("score-no-tokenizer", with_(SCORE, model="{no_tokenizer}"), ("--model", "no tokenizer files")),
    # audit
    Case("audit-probes", with_(AUDIT, probes="quant,bogus"), ("--probes", "unknown probe 'bogus'")),
    Case("audit-sparsities", with_(AUDIT, sparsities="0.5,1.5"), ("--sparsities", "(0, 1)")),
    Case("audit-relearn-steps", with_(AUDIT, relearn_steps="a,b"), ("--relearn-steps", "integers")),
    Case("audit-quant-schemes", with_(AUDIT, quant_schemes="int3"), ("--quant-schemes", "'int3'")),
    Case("audit-text-forget", with_(AUDIT, forget="{text}"), ("--forget", "QA records")),
    Case("audit-original-vocab", with_(AUDIT, original="{vocab_small}"), ("vocab_small", "do not belong together")),
    Case("audit-out-exists", AUDIT, ("--out", "already exists"), keep_dir("audit")),
    # eval
    Case("eval-suite", with_(EVAL, suite="knowledge,bogus"), ("--suite", "unknown suite 'bogus'")),
    Case("eval-not-a-world", with_(EVAL, world="{tmp}"), ("not a world directory",)),
    Case("eval-out-is-dir", EVAL, ("--out", "is a directory"), keep_dir("e.json")),
    Case("eval-out-exists", EVAL, ("--out", "already exists"), write("e.json", "{}")),
    Case("eval-read-only", with_(EVAL, out="{tmp}/ro/e.json"), ("/ro", "permission denied"), read_only),
    Case("eval-malformed", with_(EVAL, data="{tmp}/bad.jsonl"), ("bad.jsonl: line 1", "malformed JSON"),
         write("bad.jsonl", "{oops\n")),
    Case("eval-too-long", with_(EVAL, data="{tmp}/long.jsonl"),
         ("long.jsonl", f"longer than the model's context of {CONTEXT}"), write("long.jsonl", LONG)),
    Case("eval-no-tokenizer", with_(EVAL, model="{no_tokenizer}"), ("--model", "no tokenizer files")),
    # export
    Case("export-out-exists", EXPORT, ("--out", "already exists"), keep_dir("hf")),
    Case("export-shard-size", with_(EXPORT, max_shard_size="0"), ("--max-shard-size", "positive")),
    Case("export-model-is-file", with_(EXPORT, model="{qa}"), ("qa.jsonl", "is a file")),
    Case("export-dtype", with_(EXPORT, dtype="int8"), ("--dtype", "invalid choice: 'int8'")),
    Case("export-read-only", with_(EXPORT, out="{tmp}/ro/hf"), ("/ro", "permission denied"), read_only),
    Case("export-truncated", with_(EXPORT, model="{truncated}"), ("truncated", "safetensors")),
    # the parser itself
    Case("unknown-command", ["forget-everything"], ("invalid choice: 'forget-everything'",)),
]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: file bytes, or None for a directory."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse usage errors
        return e.code


@pytest.fixture
def deny_writes(monkeypatch):
    """As root, chmod does not stop writes: make os.access answer as it would for an ordinary user."""
    def deny(paths: list[Path]):
        if os.geteuid() != 0:
            return
        real = os.access
        denied = {str(p) for p in paths}
        monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if mode & os.W_OK and str(path)
                            in denied else real(path, mode, *a, **k))
    return deny


def test_battery_is_big_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    commands = {c.argv[0] for c in CASES}
    assert {"world", "pretrain", "unlearn", "score", "audit", "sequential", "eval", "export"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, env, tmp_path, capsys, deny_writes):
    work = tmp_path / "case"
    work.mkdir()
    if case.setup:
        case.setup(work)
    deny_writes([work / "ro"])
    before = snapshot(work)
    argv = [a.format(tmp=work, **env) for a in case.argv]
    try:
        code = run_main(argv)
        err = capsys.readouterr().err
    finally:
        if (work / "ro").exists():
            (work / "ro").chmod(0o755)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for text in (a.format(tmp=work, **env) for a in case.expect):
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert snapshot(work) == before, "the failed command changed, created or deleted files"


def test_debug_shows_the_traceback(env, tmp_path):
    """--debug: the same bad input raises (a traceback) instead of the one line."""
    from unlearn_jax.errors import UserError

    with pytest.raises(UserError, match="--k must be in"):
        main([*[a.format(tmp=tmp_path, **env) for a in SCORE], "--k", "0", "--debug"])


@pytest.mark.parametrize("argv, expect", [
    (with_(UNLEARN, model="{vocab_small}"), "do not belong together"),
    (with_(SCORE, data="hf:locuslab/TOFU:forget10"), "could not load"),
], ids=["vocab-mismatch", "hf-offline"])
def test_bad_input_from_a_real_process(env, tmp_path, argv, expect):
    """The same contract seen by a user's shell: library warnings and logging on stderr would count too."""
    argv = [a.format(tmp=tmp_path, **env) for a in argv]
    result = subprocess.run([sys.executable, "-m", "unlearn_jax.cli", *argv], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and expect in lines[0], result.stderr
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------
# Safety: no pickle, no remote code, and configs cannot choose where a command writes.

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_loads(source: str) -> list[str]:
    """Uses of pickle-family modules, ``torch.load``, ``allow_pickle`` / ``trust_remote_code`` other than
    False, ``weights_only=False`` and ``read_pickle`` in Python source."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            hits += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            hits.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute):
            name = ast.unparse(node)
            if name in ("torch.load", "pd.read_pickle", "pandas.read_pickle") or node.attr == "read_pickle":
                hits.append(name)
        elif isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "trust_remote_code"):
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                hits.append(f"{node.arg}={ast.unparse(node.value)}")
        elif isinstance(node, ast.keyword) and node.arg == "weights_only":
            if not (isinstance(node.value, ast.Constant) and node.value.value is True):
                hits.append(f"weights_only={ast.unparse(node.value)}")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in ("trust_remote_code", "allow_pickle") and not (
                        isinstance(value, ast.Constant) and value.value is False):
                    hits.append(f"{key.value!r}: {ast.unparse(value)}")
    return hits


def test_the_scanner_finds_what_it_looks_for():
    bad = ("import pickle\nfrom joblib import load\nimport torch\nx = torch.load(f)\nnp.load(f, allow_pickle=True)\n"
           "AutoModel.from_pretrained(p, trust_remote_code=flag)\nkw = {'trust_remote_code': True}\n"
           "torch.load(f, weights_only=False)\n")
    assert len(unsafe_loads(bad)) == 8
    assert unsafe_loads("np.load(f)\nAutoTokenizer.from_pretrained(p, trust_remote_code=False)\n") == []


def test_no_pickle_or_remote_code_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    hits = {str(f.relative_to(PACKAGE)): h for f in files if (h := unsafe_loads(f.read_text(encoding="utf-8")))}
    assert not hits, hits
    # and no string-level way around the AST check (getattr(pickle, ...), importlib.import_module("pickle"))
    pattern = re.compile(r"""import_module\(\s*["'](pickle|dill|cloudpickle|joblib|marshal|shelve)""")
    assert not [f for f in files if pattern.search(f.read_text(encoding="utf-8"))]


def output_fields() -> list[str]:
    """UnlearnConfig fields that name where a command writes."""
    from unlearn_jax.config import OUTPUT_FIELDS, UnlearnConfig

    names = {f.name for f in dataclasses.fields(UnlearnConfig)}
    assert set(OUTPUT_FIELDS) <= names
    return list(OUTPUT_FIELDS)


@pytest.mark.parametrize("command", ["unlearn", "sequential"])
@pytest.mark.parametrize("where", ["../escape", "absolute"])
@pytest.mark.parametrize("with_cli_out", [False, True])
def test_a_config_cannot_choose_where_to_write(env, tmp_path, capsys, command, where, with_cli_out):
    """The only output path a config could name is ``out`` (the run directory itself; every name inside it is
    fixed by the code: model/, run.json, request_K/ ...). A config file may be shared, and with --force an
    ``out`` of its choosing would replace that directory: so ``out`` comes from the command line only."""
    assert output_fields() == ["out"]
    inside = tmp_path / "inside"
    inside.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    target = "../victim" if where == "../escape" else str(victim)
    (inside / "c.yaml").write_text(f"out: {target}\nmethod: ga\n")
    data = "--forget" if command == "unlearn" else "--requests"
    argv = [command, "--model", str(env["model"]), data, str(env["qa"]), "--config", str(inside / "c.yaml"),
            "--force", "--quiet"]
    if with_cli_out:
        argv += ["--out", str(inside / "run")]
    cwd = os.getcwd()
    os.chdir(inside)
    try:
        before = snapshot(tmp_path)
        assert main(argv) == 2
    finally:
        os.chdir(cwd)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "c.yaml" in lines[0] and "'out'" in lines[0] and "--out" in lines[0], lines
    assert snapshot(tmp_path) == before


def test_a_run_writes_only_inside_its_out(env, tmp_path):
    """A real (1-step) run from a config: every new file lands under --out, nothing beside it."""
    (tmp_path / "c.yaml").write_text(f"model: {env['model']}\nforget: {env['qa']}\nmethod: ga\nsteps: 1\n"
                                     "batch-size: 8\n")
    before = set(snapshot(tmp_path))
    assert main(["unlearn", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    new = set(snapshot(tmp_path)) - before
    assert new and all(p == "run" or p.startswith("run/") for p in new), sorted(new)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["out"] == str(tmp_path / "run")
