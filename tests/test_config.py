"""cluster.yaml and run-spec schema v1: strict validation, exact key paths, path safety."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tolerance._errors import ConfigError
from tolerance.config import (Bounds, Box, Cluster, SchemaProblems, load_cluster, load_spec,
                              parse_chip, parse_cluster, parse_spec, shipped_cluster_path)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def cluster_problems(data, display="cluster.yaml") -> list[str]:
    with pytest.raises(SchemaProblems) as info:
        parse_cluster(data, display=display, base_dir="/base")
    return info.value.problems


def spec_problems(data, stem="s") -> list[str]:
    with pytest.raises(SchemaProblems) as info:
        parse_spec(data, stem=stem, display=f"specs/{stem}.yaml")
    return info.value.problems


def box(**kw):
    return {"name": "a", "host": "h", **kw}


# -- cluster.yaml ------------------------------------------------------------------------

def test_issue_example_message_exactly():
    data = {"schema": 1, "boxes": [box(name="a"), box(name="b"),
                                   box(name="c", chips=["gpu:x"])]}
    assert cluster_problems(data) == [
        "cluster.yaml: boxes[2].chips[0]: 'gpu:x' is not a chip "
        "(cpu:N-M | cpu:* | cuda:N | rocm:N)"]


@pytest.mark.parametrize("data, expected", [
    ({"boxes": [box()]}, "cluster.yaml: schema: missing (required; write 'schema: 1')"),
    ({"schema": 2, "boxes": [box()]}, "cluster.yaml: schema: unsupported schema 2"),
    ({"schema": True, "boxes": [box()]}, "cluster.yaml: schema: unsupported schema True"),
    ({"schema": 1}, "cluster.yaml: boxes: missing"),
    ({"schema": 1, "boxes": []}, "cluster.yaml: boxes: must list at least one box"),
    ({"schema": 1, "boxes": {"a": 1}}, "cluster.yaml: boxes: must be a list, not a mapping"),
    ({"schema": 1, "boxes": [box()], "extra": 1}, "cluster.yaml: extra: unknown key"),
    ({"schema": 1, "boxes": [box(hots="x")]}, "cluster.yaml: boxes[0].hots: unknown key"),
    ({"schema": 1, "boxes": ["a"]}, "cluster.yaml: boxes[0]: must be a mapping, not a string"),
    ({"schema": 1, "boxes": [{"host": "h"}]}, "cluster.yaml: boxes[0].name: missing (required)"),
    ({"schema": 1, "boxes": [{"name": "a"}]}, "cluster.yaml: boxes[0].host: missing (required"),
    ({"schema": 1, "boxes": [box(name=3)]}, "cluster.yaml: boxes[0].name: must be a string, not an integer"),
    ({"schema": 1, "boxes": [box(host="")]}, "cluster.yaml: boxes[0].host: must not be empty"),
    ({"schema": 1, "boxes": [box(root=5)]}, "cluster.yaml: boxes[0].root: must be a string"),
    ({"schema": 1, "boxes": [box(python=["py"])]}, "cluster.yaml: boxes[0].python: must be a string, not a list"),
    ({"schema": 1, "boxes": [box(env=["A=1"])]}, "cluster.yaml: boxes[0].env: must be a mapping, not a list"),
    ({"schema": 1, "boxes": [box(env={"A": True})]}, "cluster.yaml: boxes[0].env.A: must be a string, not a boolean (quote it)"),
    ({"schema": 1, "boxes": [box(env={"A": None})]}, "cluster.yaml: boxes[0].env.A: must be a string, not null"),
    ({"schema": 1, "boxes": [box(env={"A B": "1"})]}, "cluster.yaml: boxes[0].env[\"A B\"]: 'A B' is not an environment variable name"),
    ({"schema": 1, "boxes": [box(chips="cpu:*")]}, "cluster.yaml: boxes[0].chips: must be a list, not a string"),
    ({"schema": 1, "boxes": [box(chips=[])]}, "cluster.yaml: boxes[0].chips: must list at least one chip"),
    ({"schema": 1, "boxes": [box(chips=["cpu:3-1"])]}, "cluster.yaml: boxes[0].chips[0]: 'cpu:3-1' is not a chip: range 3-1 runs backwards"),
    ({"schema": 1, "boxes": [box(chips=[1])]}, "cluster.yaml: boxes[0].chips[0]: 1 is not a chip"),
    ({"schema": 1, "boxes": [box(chips=["cuda:0", "cuda:0"])]}, "cluster.yaml: boxes[0].chips[1]: 'cuda:0' is listed twice"),
    ({"schema": 1, "boxes": [box(chips=["cpu:*", "rocm:-1"])]}, "cluster.yaml: boxes[0].chips[1]: 'rocm:-1' is not a chip"),
    ({"schema": 1, "boxes": [box(tags="x")]}, "cluster.yaml: boxes[0].tags: must be a list, not a string"),
    ({"schema": 1, "boxes": [box(tags=["x", 2])]}, "cluster.yaml: boxes[0].tags[1]: must be a string, not an integer"),
    ({"schema": 1, "boxes": [box(threads=0)]}, "cluster.yaml: boxes[0].threads: must be >= 1, not 0"),
    ({"schema": 1, "boxes": [box(threads=True)]}, "cluster.yaml: boxes[0].threads: must be an integer, not a boolean"),
    ({"schema": 1, "boxes": [box(), box()]}, "cluster.yaml: boxes[1].name: duplicate box name 'a' (also boxes[0])"),
    ([1, 2], "cluster.yaml: top level: must be a mapping, not a list"),
    (None, "cluster.yaml: top level: empty file"),
])
def test_cluster_schema_errors(data, expected):
    problems = cluster_problems(data)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-x", ".hidden", "a b", "", "ä", "a\\b",
                                  "a:b"])
def test_box_names_must_be_path_safe(name):
    problems = cluster_problems({"schema": 1, "boxes": [box(name=name)]})
    assert len(problems) == 1 and problems[0].startswith("cluster.yaml: boxes[0].name: "), problems


@pytest.mark.parametrize("name", ["a", "A_1", "box-1.local", "_x", "0"])
def test_safe_box_names_pass(name):
    assert parse_cluster({"schema": 1, "boxes": [box(name=name)]}).boxes[0].name == name


def test_every_problem_is_collected():
    data = {"schema": 3, "boxes": [box(name="..", chips=["gpu:x"]), {"name": "b"}, box(env={"X": []})]}
    problems = cluster_problems(data)
    assert problems == [
        "cluster.yaml: schema: unsupported schema 3 (this tolerance reads schema 1)",
        "cluster.yaml: boxes[0].name: '..' is not a safe name (not '.' or '..')",
        "cluster.yaml: boxes[0].chips[0]: 'gpu:x' is not a chip (cpu:N-M | cpu:* | cuda:N | rocm:N)",
        "cluster.yaml: boxes[1].host: missing (required; 'localhost' for this machine)",
        "cluster.yaml: boxes[2].env.X: must be a string, not a list (quote it)",
    ]
    with pytest.raises(ConfigError) as info:
        parse_cluster(data, display="cluster.yaml")
    assert "\n" not in str(info.value) and "and 4 more problems" in str(info.value)


def test_cluster_defaults_and_normalization(tmp_path):
    p = write(tmp_path, "cluster.yaml", """\
        schema: 1
        boxes:
          - name: a
            host: localhost
          - name: b
            host: h2
            root: sub/dir
            python: /opt/py/bin/python3
            threads: 4
            env: {X: 1, Y: 2.5, Z: "s"}
            chips: [cpu:0-1, "cpu:2", cuda:1, rocm:0]
            tags: [t1]
        """)
    c = load_cluster(p)
    a, b = c.boxes
    assert isinstance(c, Cluster) and isinstance(a, Box)
    assert a.root == str(tmp_path.resolve()) and a.python == "python3"
    assert a.chips == ("cpu:*",) and a.env == {} and a.tags == () and a.threads is None
    assert b.root == str(tmp_path.resolve() / "sub" / "dir")
    assert b.env == {"X": "1", "Y": "2.5", "Z": "s"}
    assert b.chips == ("cpu:0-1", "cpu:2", "cuda:1", "rocm:0")
    assert b.resolved_env()["OMP_NUM_THREADS"] == "4"
    assert c.box("b") is b and c.names == ("a", "b")
    assert c.specs_dir == tmp_path / "specs"
    with pytest.raises(ConfigError, match=r"no box named 'zz' \(known: a, b\)"):
        c.box("zz")
    with pytest.raises(Exception):
        a.name = "x"  # frozen


def test_yaml_duplicate_keys_are_named_with_their_path(tmp_path):
    p = write(tmp_path, "cluster.yaml", """\
        schema: 1
        boxes:
          - name: a
            host: h
            env:
              A: "1"
              A: "2"
        schema: 1
        """)
    with pytest.raises(SchemaProblems) as info:
        load_cluster(p, display="cluster.yaml")
    assert info.value.problems == [
        "cluster.yaml: boxes[0].env.A: duplicate key (line 7; first on line 6)",
        "cluster.yaml: schema: duplicate key (line 8; first on line 1)",
    ]


def test_yaml_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "cluster.yaml", "schema: 1\nboxes: [\n")
    with pytest.raises(SchemaProblems, match=r"^.*cluster.yaml: line \d+ column \d+: YAML syntax"):
        load_cluster(p)


def test_yaml_unsafe_tags_are_rejected(tmp_path):
    p = write(tmp_path, "cluster.yaml", "schema: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SchemaProblems, match="cluster.yaml: line 1"):
        load_cluster(p)


def test_missing_file(tmp_path):
    with pytest.raises(SchemaProblems, match="nope.yaml: no such file"):
        load_cluster(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, kind, index, cores, slug, norm", [
    ("cpu:*", "cpu", None, None, "cpu-all", "cpu:*"),
    ("cpu:0-3", "cpu", None, (0, 1, 2, 3), "cpu-0-3", "cpu:0-3"),
    ("cpu:2", "cpu", None, (2,), "cpu-2", "cpu:2"),
    ("cpu:0,2", "cpu", None, (0, 2), "cpu-0_2", "cpu:0,2"),
    ("cpu:4-5,0,1", "cpu", None, (0, 1, 4, 5), "cpu-0-1_4-5", "cpu:0-1,4-5"),
    ("cuda:1", "cuda", 1, None, "cuda-1", "cuda:1"),
    ("rocm:0", "rocm", 0, None, "rocm-0", "rocm:0")])
def test_parse_chip(text, kind, index, cores, slug, norm):
    chip = parse_chip(text)
    assert (chip.kind, chip.index, chip.cores, chip.slug, str(chip)) == \
        (kind, index, cores, slug, norm)


@pytest.mark.parametrize("text", ["gpu:0", "cpu:", "cpu:a", "cuda:*", "cuda:0-1", " cpu:*",
                                  "CPU:*", "cpu:1-", "rocm:x"])
def test_bad_chips(text):
    with pytest.raises(ValueError, match=r"is not a chip"):
        parse_chip(text)


def test_chip_knobs():
    from tolerance.config import THREAD_VARS, knob_env
    assert knob_env(parse_chip("cuda:1")) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert knob_env(parse_chip("rocm:2")) == {"ROCR_VISIBLE_DEVICES": "2",
                                              "HIP_VISIBLE_DEVICES": "2"}
    assert knob_env(parse_chip("cpu:0-1")) == {v: "2" for v in THREAD_VARS}
    assert knob_env(parse_chip("cpu:*")) == {}
    assert knob_env(parse_chip("cpu:0-3"), threads=3)["MKL_NUM_THREADS"] == "3"


def test_box_env_wins_over_what_the_chip_implies():
    """Regression: a box with OMP_NUM_THREADS=1 and chip cpu:0-1 gave its workload 2."""
    from tolerance.config import Box, knob_env
    from tolerance.runner import chip_env
    box = Box(name="a", host="localhost", root="/r", env={"OMP_NUM_THREADS": "1"},
              chips=("cpu:0-1",), threads=4)
    spec = parse_spec(minimal(), stem="s")
    env = chip_env(spec, box, parse_chip("cpu:0-1"))
    assert env["OMP_NUM_THREADS"] == "1"          # the box's env wins
    assert env["OPENBLAS_NUM_THREADS"] == "4"     # then the box's threads
    assert knob_env(parse_chip("cuda:0"), env={"CUDA_VISIBLE_DEVICES": "7"}) == \
        {"CUDA_VISIBLE_DEVICES": "7"}


# -- specs -------------------------------------------------------------------------------

def minimal(**kw):
    return {"schema": 1, "command": ["run", "{out}"], **kw}


def test_spec_defaults():
    s = parse_spec(minimal(), stem="s")
    assert s.command == ("run", "{out}") and s.python is None
    assert s.outputs == "*.npz" and s.keys is None  # no example keys: every common key
    assert s.bounds_for("z_b") == Bounds(None, None, None) and s.steps_axis == 0
    assert s.env == {} and s.timeout == 600.0


def test_spec_bounds_per_key_fall_back_to_default():
    s = parse_spec(minimal(bounds={"default": {"atol": 1e-6, "ulp": 4},
                                   "z_b": {"rtol": 1e-3}, "omega_b": {"ulp": None}}), stem="s")
    assert s.bounds_for("z_b") == Bounds(atol=1e-6, rtol=1e-3, ulp=4)
    assert s.bounds_for("omega_b") == Bounds(atol=1e-6, rtol=None, ulp=None)
    assert s.bounds_for("not_listed") == Bounds(atol=1e-6, rtol=None, ulp=4)
    assert set(s.bounds) == {"z_b", "omega_b"}
    # an unset bound is not a zero bound; `atol: null` unsets an inherited one
    s = parse_spec(minimal(bounds={"default": {"atol": 1e-6}, "z_b": {"atol": None, "ulp": 2}}),
                   stem="s")
    assert s.bounds_for("z_b") == Bounds(atol=None, rtol=None, ulp=2)


def test_spec_yaml_floats_like_1e_minus_6(tmp_path):
    p = write(tmp_path, "specs/f.yaml", """\
        schema: 1
        python: pkg.mod:main
        bounds: {default: {atol: 1e-6, rtol: 2E-3}}
        steps_axis: null
        timeout: 5
        """)
    s = load_spec("f", tmp_path / "specs")
    assert s.bounds_for("z_b") == Bounds(atol=1e-6, rtol=2e-3)
    assert s.steps_axis is None and s.timeout == 5.0 and s.python == "pkg.mod:main"
    assert load_spec(p).stem == "f"


@pytest.mark.parametrize("data, expected", [
    ({"command": ["x"]}, "specs/s.yaml: schema: missing"),
    (minimal(schema="1"), "specs/s.yaml: schema: unsupported schema '1'"),
    ({"schema": 1}, "specs/s.yaml: command: missing (required: 'command' (argv list) or 'python'"),
    (minimal(python="m:f"), "specs/s.yaml: python: give either 'command' or 'python', not both"),
    (minimal(command="python -m x"), "specs/s.yaml: command: must be a list of arguments (argv), not a string"),
    (minimal(command=[]), "specs/s.yaml: command: must not be empty"),
    (minimal(command=["a", None]), "specs/s.yaml: command[1]: must be a string, not null"),
    (minimal(command=["a", "{outdir}"]), "specs/s.yaml: command[1]: unknown placeholder {outdir}"),
    (minimal(command=["a", "{out"]), "specs/s.yaml: command[1]: bad placeholder"),
    ({"schema": 1, "python": "no colon"}, "specs/s.yaml: python: 'no colon' is not module:function"),
    ({"schema": 1, "python": "a.b:"}, "specs/s.yaml: python: 'a.b:' is not module:function"),
    ({"schema": 1, "python": 3}, "specs/s.yaml: python: must be a string, not an integer"),
    (minimal(outputs="../*.npz"), "specs/s.yaml: outputs: '../*.npz' must be a glob relative"),
    (minimal(outputs="/tmp/*.npz"), "specs/s.yaml: outputs: '/tmp/*.npz' must be a glob relative"),
    (minimal(outputs=["*.npz"]), "specs/s.yaml: outputs: must be a string, not a list"),
    (minimal(keys="z_b"), "specs/s.yaml: keys: must be a list, not a string"),
    (minimal(keys=[]), "specs/s.yaml: keys: must list at least one key"),
    (minimal(keys=["a", "a"]), "specs/s.yaml: keys[1]: 'a' is listed twice"),
    (minimal(keys=["a", 1]), "specs/s.yaml: keys[1]: must be a string, not an integer"),
    (minimal(bounds=[1]), "specs/s.yaml: bounds: must be a mapping, not a list"),
    (minimal(bounds={"default": {"atol": -1}}), "specs/s.yaml: bounds.default.atol: must be >= 0, not -1"),
    (minimal(bounds={"default": {"atol": "x"}}), "specs/s.yaml: bounds.default.atol: must be a number, not a string"),
    (minimal(bounds={"default": {"atol": float("nan")}}), "specs/s.yaml: bounds.default.atol: must be finite"),
    (minimal(bounds={"default": {"tol": 1}}), "specs/s.yaml: bounds.default.tol: unknown key (expected one of: atol, rtol, ulp)"),
    (minimal(bounds={"z_b": {"ulp": 1.5}}), "specs/s.yaml: bounds.z_b.ulp: must be an integer, not a number"),
    (minimal(bounds={"z_b": {"ulp": -1}}), "specs/s.yaml: bounds.z_b.ulp: must be >= 0, not -1"),
    (minimal(bounds={"z_b": {"rtol": True}}), "specs/s.yaml: bounds.z_b.rtol: must be a number, not a boolean"),
    (minimal(keys=["z_b", "omega_b"], bounds={"zz": {"atol": 1}}), "specs/s.yaml: bounds.zz: 'zz' is not one of keys (z_b, omega_b)"),
    (minimal(bounds={"atol": 1}), "specs/s.yaml: bounds.atol: put atol under bounds.default or under a key"),
    (minimal(steps_axis="0"), "specs/s.yaml: steps_axis: must be an integer, not a string"),
    (minimal(steps_axis=False), "specs/s.yaml: steps_axis: must be an integer, not a boolean"),
    (minimal(env={"X": {}}), "specs/s.yaml: env.X: must be a string, not a mapping"),
    (minimal(timeout=0), "specs/s.yaml: timeout: must be > 0, not 0"),
    (minimal(timeout="1h"), "specs/s.yaml: timeout: must be a number, not a string"),
    (minimal(comand=["x"]), "specs/s.yaml: comand: unknown key"),
    ("text", "specs/s.yaml: top level: must be a mapping, not a string"),
    (None, "specs/s.yaml: top level: empty file"),
])
def test_spec_schema_errors(data, expected):
    problems = spec_problems(data)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize("knob", ["threads", "chips", "memory", "host", "root"])
def test_box_local_knobs_are_rejected_in_specs(knob):
    problems = spec_problems(minimal(**{knob: 4}))
    assert problems == [f"specs/s.yaml: {knob}: a box-local knob: it belongs in cluster.yaml "
                        f"({problems[0].split('cluster.yaml (')[1]}"]
    assert "belongs in cluster.yaml" in problems[0]


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                 "OPENBLAS_CORETYPE"])
def test_box_local_env_is_rejected_in_specs(var):
    problems = spec_problems(minimal(env={var: "1"}))
    assert len(problems) == 1
    assert problems[0].startswith(f"specs/s.yaml: env.{var}: a box-local knob: it belongs in cluster.yaml")


@pytest.mark.parametrize("stem", ["..", ".", "a/b", "-x", "a b", ""])
def test_stems_must_be_path_safe(stem, tmp_path):
    with pytest.raises(ConfigError, match="stem"):
        load_spec(stem, tmp_path) if "/" not in stem else parse_spec(minimal(), stem=stem)


def test_spec_all_problems_collected():
    problems = spec_problems({"schema": 1, "command": "x", "keys": [], "timeout": -1, "threads": 2})
    assert [p.split(":")[1].strip() for p in problems] == ["threads", "command", "keys", "timeout"]


def test_missing_spec_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_spec("nope", tmp_path)


def test_argv_placeholders():
    s = parse_spec(minimal(command=["{python}", "-c", "x={{1}}", "--out={out}", "{chip}"]), stem="s")
    assert s.argv(out="/o", chip="/o/chip.json", python="/py", root="/r") == [
        "/py", "-c", "x={1}", "--out=/o", "/o/chip.json"]
    s = parse_spec(minimal(command=["{python}", "{root}/mywork/ode.py", "{out}"],
                           env={"DATA": "{root}/data", "LIT": "{{root}}"}), stem="s")
    assert s.argv(out="/o", chip="/c", python="/py", root="/r") == ["/py", "/r/mywork/ode.py", "/o"]
    assert s.resolved_env(out="/o", chip="/c", python="/py", root="/r") == {
        "DATA": "/r/data", "LIT": "{root}"}


def test_env_placeholders_checked():
    with pytest.raises(ConfigError, match=r"env\.DATA: unknown placeholder \{rot\}"):
        parse_spec(minimal(env={"DATA": "{rot}/data"}), stem="s")


def test_keys_optional_bounds_name_any_key():
    s = parse_spec(minimal(bounds={"x": {"atol": 1e-3}}), stem="s")
    assert s.keys is None and s.bounds_for("x").atol == 1e-3 and s.bounds_for("y").atol is None
    assert s.normalized()["keys"] is None
    assert s.identity_hash() != parse_spec(minimal(keys=["x"], bounds={"x": {"atol": 1e-3}}),
                                           stem="s").identity_hash()


def test_identity_hash():
    a = parse_spec(minimal(env={"A": "1"}, keys=["z_b", "omega_b"],
                           bounds={"z_b": {"atol": 1e-6}}), stem="s")
    b = parse_spec({"timeout": 600, "env": {"A": 1}, "bounds": {"z_b": {"atol": 0.000001}},
                    "command": ["run", "{out}"], "schema": 1, "description": "text",
                    "keys": ["z_b", "omega_b"], "outputs": "*.npz"}, stem="s")
    assert a.identity_hash() == b.identity_hash() and len(a.identity_hash()) == 64
    assert a.identity_hash() != parse_spec(minimal(env={"A": "2"}, bounds={"z_b": {"atol": 1e-6}}),
                                           stem="s").identity_hash()
    assert a.identity_hash() != parse_spec(minimal(env={"A": "1"}), stem="s").identity_hash()
    assert a.identity_hash() != parse_spec(minimal(env={"A": "1"}, bounds={"z_b": {"atol": 1e-6}}),
                                           stem="t").identity_hash()


# -- the shipped files -------------------------------------------------------------------

def test_default_cluster_is_three_openblas_boxes_on_localhost():
    c = load_cluster(REPO / "cluster.yaml")
    assert [(b.host, b.env["OPENBLAS_CORETYPE"]) for b in c.boxes] == [
        ("localhost", "Haswell"), ("localhost", "SandyBridge"), ("localhost", "Prescott")]
    assert all(b.env["OPENBLAS_NUM_THREADS"] == "1" and b.env["OMP_NUM_THREADS"] == "1"
               for b in c.boxes)
    assert all(b.root == str(REPO) for b in c.boxes)
    assert "replace" in (REPO / "cluster.yaml").read_text()


@pytest.mark.parametrize("stem", ["lorenz", "stable"])
def test_shipped_specs_load(stem):
    s = load_spec(stem, REPO / "specs")
    assert s.python == f"tolerance.examples.{stem}:main" and s.keys == ("z_b", "omega_b")


@pytest.mark.parametrize("rel", ["cluster.yaml", "specs/lorenz.yaml", "specs/stable.yaml"])
def test_package_data_copies_are_identical(rel):
    packaged = REPO / "python" / "tolerance" / "data" / rel
    assert packaged.read_bytes() == (REPO / rel).read_bytes(), \
        f"python/tolerance/data/{rel} must be a copy of {rel}: cp {rel} python/tolerance/data/{rel}"


def test_package_data_specs_are_exactly_the_shipped_ones():
    packaged = sorted(p.name for p in (REPO / "python/tolerance/data/specs").glob("*.yaml"))
    assert packaged == sorted(p.name for p in (REPO / "specs").glob("*.yaml"))


def test_shipped_cluster_path():
    """Source tree / editable install: the repository's file; installed: the package copy."""
    path, in_repo = shipped_cluster_path()
    if in_repo:
        assert path == REPO / "cluster.yaml"
    else:
        assert path.parent.name == "data" and path.read_bytes() == (REPO / "cluster.yaml").read_bytes()
        assert (path.parent / "specs" / "lorenz.yaml").is_file()


def test_configs_pickle_for_the_mpi_layer():
    import pickle

    c = load_cluster(REPO / "cluster.yaml")
    s = load_spec("lorenz", REPO / "specs")
    assert pickle.loads(pickle.dumps(c)) == c
    s2 = pickle.loads(pickle.dumps(s))
    assert s2 == s and s2.identity_hash() == s.identity_hash()
