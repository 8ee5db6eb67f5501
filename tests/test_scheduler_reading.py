"""A learner reads any scheduler's `step()` by opening at most two files: its own and common.py.

`reading_list(cls, "step")` follows a method the way a reader does: every function, method and
class of ddlearn that it calls, then what those call, and so on; it returns the definitions and
the files they live in. Drawing noise (`ddlearn/noise.py`, diffusers' `randn_tensor`) counts as
a library call, like `torch.randn`.

    python tests/test_scheduler_reading.py     # prints the reading list of every step()
"""

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest

import ddlearn

PACKAGE = Path(ddlearn.__file__).parent
LIBRARY_CALLS = {"ddlearn/noise.py"}  # the one way to draw noise, read like torch.randn
NAMES = ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
         "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
         "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
         "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]


def relative(path) -> str:
    return str(Path(path).resolve().relative_to(PACKAGE.parent))


def definition_node(module, name):
    """(file, AST node) of a module-level def or class `name` in `module`, if ddlearn's."""
    source = Path(inspect.getsourcefile(module))
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return relative(source), node
    return None


def method_node(cls, name):
    """(file, AST node) of method `name` as `cls` resolves it (its own, or a base class's)."""
    for klass in cls.__mro__:
        if name in vars(klass) and klass.__module__.startswith("ddlearn"):
            _, class_node = definition_node(sys.modules[klass.__module__], klass.__name__)
            for node in class_node.body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    return relative(inspect.getsourcefile(klass)), node
    return None


def reading_list(cls, method: str = "step") -> dict:
    """{definition: file} of everything in ddlearn that reading `cls.method` leads to."""
    found, todo = {}, [(f"{cls.__name__}.{method}", method_node(cls, method),
                        sys.modules[cls.__module__])]
    while todo:
        label, where, module = todo.pop()
        if where is None or label in found:
            continue
        file, node = where
        found[label] = file
        for call in ast.walk(node):
            target = call.func if isinstance(call, ast.Call) else None
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                    and target.value.id == "self":  # self.method(...)
                todo.append((f"{cls.__name__}.{target.attr}", method_node(cls, target.attr),
                             module))
            elif isinstance(target, ast.Name):  # a function or class of ddlearn, by name
                obj = getattr(module, target.id, None)
                home = getattr(obj, "__module__", "") or ""
                if home.startswith("ddlearn") and relative(sys.modules[home].__file__) \
                        not in LIBRARY_CALLS:
                    todo.append((target.id, definition_node(sys.modules[home], target.id),
                                 sys.modules[home]))
    return found


@pytest.mark.parametrize("name", NAMES)
def test_step_reads_in_its_own_file_and_common_py(name):
    cls = getattr(ddlearn, name)
    files = set(reading_list(cls).values())
    own = relative(inspect.getsourcefile(cls))
    assert files <= {own, "ddlearn/schedulers/common.py"}, (
        f"{name}.step() leads a reader into {sorted(files - {own})}")


def test_reading_list_follows_calls_into_other_files():
    """The walker itself: DDIM's step reaches common.py's predict_x0 and its own file."""
    found = reading_list(ddlearn.DDIMScheduler)
    assert found["predict_x0"] == "ddlearn/schedulers/common.py"
    assert found["DDIMScheduler.step"] == "ddlearn/schedulers/ddim.py"
    assert "DDIMScheduler.set_timesteps" not in found
    schedule = reading_list(ddlearn.DDIMScheduler, "set_timesteps")
    assert schedule["spaced_timesteps"] == "ddlearn/schedulers/schedules.py"


if __name__ == "__main__":
    for name in NAMES:
        found = reading_list(getattr(importlib.import_module("ddlearn"), name))
        files = sorted(set(found.values()))
        print(f"{name}.step: {len(files)} files, {len(found)} definitions")
        for file in files:
            print(f"    {file}: {', '.join(sorted(k for k, v in found.items() if v == file))}")
