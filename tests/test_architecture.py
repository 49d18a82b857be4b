"""The layers of docs/architecture.md, kept true: each part imports only what its rule allows.

The engine is the one place that knows the model, the pool, tasks and codecs together; tasks, codecs,
sinks and text encoders know the plugin contracts and the shared basics, not each other or the model.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASICS = ("streamgen.config", "streamgen.errors")

# part (folder) -> the streamgen modules its files may import, besides their own part
RULES = {
    "streamgen/model": (*BASICS, "streamgen.engine.adc"),
    "streamgen/plugins": (*BASICS, "streamgen.engine.adc", "streamgen.media"),
    "tasks": (*BASICS, "streamgen.plugins", "streamgen.engine.adc", "streamgen.media"),
    "codecs": (*BASICS, "streamgen.plugins", "streamgen.checkpoint"),
    "streamgen/output": (*BASICS, "streamgen.plugins", "streamgen.checkpoint"),
    "streamgen/text.py": (*BASICS, "streamgen.plugins"),
    "streamgen/engine": (*BASICS, "streamgen.model", "streamgen.plugins", "streamgen.checkpoint"),
    # the server sits beside the command line: it takes the control channel's commands
    "streamgen/serve": (*BASICS, "streamgen.engine", "streamgen.plugins", "streamgen.output", "streamgen.bundle",
                        "streamgen.cli.control"),
}
OWN = {"streamgen/model": "streamgen.model", "streamgen/plugins": "streamgen.plugins", "tasks": "streamgen.tasks",
       "codecs": "streamgen.codecs", "streamgen/output": "streamgen.output", "streamgen/text.py": "streamgen.text",
       "streamgen/engine": "streamgen.engine", "streamgen/serve": "streamgen.serve"}


def is_module(name: str) -> bool:
    parts = name.split(".")[1:]
    folder = {"tasks": "tasks", "codecs": "codecs"}.get(parts[0], "streamgen/" + parts[0]) if parts else "streamgen"
    path = ROOT / folder / "/".join(parts[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: pathlib.Path) -> set[str]:
    """Every streamgen module a file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "streamgen":
            for a in node.names:  # `from streamgen.engine import adc` imports streamgen.engine.adc
                sub = f"{node.module}.{a.name}"
                out.add(sub if is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "streamgen"}
    return out


@pytest.mark.parametrize("part", sorted(RULES))
def test_each_part_imports_only_what_its_layer_allows(part):
    where = ROOT / part
    files = [where] if where.suffix == ".py" else sorted(where.rglob("*.py"))
    assert files, part
    allowed = (*RULES[part], OWN[part], "streamgen.hookimpl")
    for path in files:
        for module in imports(path):
            assert module.startswith(allowed), f"{path.relative_to(ROOT)} imports {module}"


def test_the_rule_sees_a_forbidden_import(tmp_path):
    """The checker itself: an import a part may not make is found, at any depth in the file."""
    path = tmp_path / "task.py"
    path.write_text("def job():\n    from streamgen.model import VisionDecoder\n    from streamgen import engine\n")
    assert imports(path) == {"streamgen.model", "streamgen.engine"}
    assert not "streamgen.model".startswith(RULES["tasks"])
    assert not "streamgen.engine".startswith(RULES["tasks"])
