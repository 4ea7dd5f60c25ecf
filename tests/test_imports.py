"""Dependencies point one way: storage/config/registry ← data, models ← train, infer ← toyworld ← cli.
The miniature world registers its `toy` preset itself (toyworld/presets.py, found by the
preset registry by file name), so models/ never names it.

Read from the source (every import, the ones inside functions too), so a lazy import
cannot hide a cycle that a later refactor would turn into an import error.
"""
import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "vlv_ray"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The vlv_ray modules `path` imports (`from vlv_ray.x import y` counts y when y is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vlv_ray")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlv_ray"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out |= subs or {node.module}
    return out & modules - {module_name(path)}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports_of(p, set(files)) for m, p in files.items()}


def test_data_and_models_never_import_train_infer_or_the_miniature_world():
    up = ("vlv_ray.train", "vlv_ray.infer", "vlv_ray.toyworld", "vlv_ray.cli")
    bad = {m: sorted(d for d in deps if d.startswith(up))
           for m, deps in graph().items() if m.startswith(("vlv_ray.data", "vlv_ray.models"))}
    assert {m: d for m, d in bad.items() if d} == {}


def test_evaluation_never_imports_training():
    """The training loop runs evaluations by images seen (eval/during.py); eval/ reaching back into
    train/ would make the two folders one loop (it did, for `eval_mode`, now in models/modes.py)."""
    bad = {m: sorted(d for d in deps if d.startswith("vlv_ray.train"))
           for m, deps in graph().items() if m.startswith("vlv_ray.eval")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_models_never_name_the_miniature_world():
    """Not even as a string for importlib: toyworld/presets.py registers the toy preset itself."""
    named = [str(p.relative_to(REPO)) for p in (PACKAGE / "models").rglob("*.py")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Constant) and str(node.value).startswith("vlv_ray.toyworld")]
    assert named == []


def test_the_toy_preset_is_registered_on_demand_in_a_fresh_process():
    """A Ray worker imports only what its function needs: the registry must find `toy` itself."""
    import subprocess
    import sys

    code = ("from vlv_ray.models import presets; import sys; "
            "assert 'vlv_ray.toyworld.presets' not in sys.modules; "
            "print(presets.get_preset('toy').name, sorted(presets.preset_names()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "toy" and "['paper', 'tiny', 'toy']" in r.stdout


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_job_schema_stands_below_every_component():
    """vlv_ray/config/ (the job, its sections, sweep files) imports only the typed machinery, the
    preset registry and storage's redaction: no arrow runs from the schema up to a component
    that reads it (the sections once lived beside their owners, which drew three such arrows)."""
    g = graph()
    schema = {m for m in g if m == "vlv_ray.config" or m.startswith("vlv_ray.config.")}
    assert {"vlv_ray.config.job", "vlv_ray.config.cost", "vlv_ray.config.launch", "vlv_ray.config.logging",
            "vlv_ray.config.sweep"} <= schema
    below = {"vlv_ray.typed", "vlv_ray.registry", "vlv_ray.storage"}
    assert {m: sorted(g[m] - schema - below) for m in schema} == {m: [] for m in schema}


def test_loading_a_job_imports_no_torch():
    """`vlv-ray config check` and the cost commands stay fast: the job schema never pulls torch in."""
    import subprocess
    import sys

    code = ("import sys; from vlv_ray.config import load_job, CostConfig, LaunchConfig, LoggingConfig; "
            "load_job('jobs/stage1-paper.yaml'); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
