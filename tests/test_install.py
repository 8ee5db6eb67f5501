"""The two ways ddlearn reaches a learner without a clone, tried as they would try them.

- A wheel built from the sdist (what `pip install ddlearn` and `pip install git+URL` give),
  installed without editable magic: every shipped pipeline loads and generates from an unrelated
  directory, offline, because the wheel carries data/.
- Colab, simulated: a fake `google.colab`, a temporary directory standing in for /content, the
  install cell's source pointed at a copy of this checkout (DDLEARN_INSTALL_SOURCE), and pip
  installing into a target folder so the test venv is left alone. The install cell, `import
  ddlearn` and a shipped pipeline run in one kernel; then the install cell runs a second time.

Both build from a copy of the tracked files, so nothing is written into the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from chapter_headers import install_cell  # noqa: E402

GENERATE = """
import sys, torch, ddlearn
from ddlearn import DiffusionPipeline
from ddlearn.data import DATA_ROOT, shipped_model
assert ddlearn.__file__.startswith(sys.argv[1]), ddlearn.__file__
for name, kwargs in [("ddpm-butterflies-32", {}), ("ch04-cpu-butterflies", {}),
                     ("tiny-sd-butterflies", {"prompt": "a red butterfly"})]:
    pipe = DiffusionPipeline.from_pretrained(shipped_model(name))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np", **kwargs).images
    assert image.shape[0] == 1 and 0 <= image.min() <= image.max() <= 1, (name, image.shape)
    print(name, type(pipe).__name__, image.shape, "from", shipped_model(name))
pipe.load_lora_weights(shipped_model("sks-butterfly"))  # chapter 06's files, from the wheel too
pipe.load_textual_inversion(shipped_model("sks-butterfly"), token="<sks>")
image = pipe("a <sks> sks butterfly", num_inference_steps=2, output_type="np").images
print("sks-butterfly LoRA and embedding", image.shape)
"""


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the files git tracks (and of new ones it would track), as a clone would have."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    copy = tmp_path_factory.mktemp("checkout") / "ddlearn"
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def wheel(checkout, tmp_path_factory) -> Path:
    """sdist first, then the wheel built from the unpacked sdist, as PyPI users get it."""
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=checkout)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(dist, filter="data")
    assert any(n.endswith("tiny-sd-butterflies/unet/diffusion_pytorch_model.safetensors")
               for n in names), "the sdist lost data/models"
    unpacked = dist / sdist.name.removesuffix(".tar.gz")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(unpacked)])
    (built,) = dist.glob("*.whl")
    return built


def test_wheel_carries_the_checkpoints_and_generates_from_anywhere(wheel, tmp_path):
    size_mb = wheel.stat().st_size / 1e6
    assert size_mb < 80, f"wheel is {size_mb:.0f} MB: PyPI refuses files over 100 MB"
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)])
    assert (target / "ddlearn/data/shipped/models/ddpm-butterflies-32/model_index.json").is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    out = run([sys.executable, "-c", GENERATE, str(target)], cwd=elsewhere, env=env).stdout
    assert out.count(str(target / "ddlearn/data/shipped/models")) == 3, out
    assert "sks-butterfly LoRA and embedding (1, 32, 32, 3)" in out, out


def test_install_cell_does_nothing_outside_colab(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    namespace = {}
    exec(install_cell(), namespace)
    assert namespace["ON_COLAB"] is False and calls == []


def execute(client, code: str) -> str:
    """Run `code` in the kernel; return its text output, failing with it on an error."""
    outputs = []
    reply = client.execute_interactive(
        code, timeout=600, output_hook=lambda msg: outputs.append(msg["content"]))
    text = "".join(o.get("text", "") + "\n".join(o.get("traceback", [])) for o in outputs)
    assert reply["content"]["status"] == "ok", f"cell failed:\n{code}\n{text}"
    return text


def test_colab_install_cell_then_import_without_restart_and_again(checkout, tmp_path):
    from jupyter_client.manager import start_new_kernel

    fake, content, target = tmp_path / "fake", tmp_path / "content", tmp_path / "site-packages"
    (fake / "google" / "colab").mkdir(parents=True)  # namespace `google`, as on Colab
    (fake / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab."""\n')
    content.mkdir()
    target.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(target)]),
           "DDLEARN_INSTALL_SOURCE": str(checkout), "HF_HUB_OFFLINE": "1",
           # pip into a folder, not into the test venv; dependencies are there already
           "PIP_TARGET": str(target), "PIP_UPGRADE": "1", "PIP_NO_DEPS": "1",
           "PIP_NO_BUILD_ISOLATION": "0"}
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(content), env=env)
    try:
        execute(client, install_cell())
        out = execute(client, "import ddlearn, json; from ddlearn import DDPMPipeline\n"
                              "from ddlearn.data import shipped_model\n"
                              "pipe = DDPMPipeline.from_pretrained(shipped_model("
                              "'ddpm-butterflies-32'))\n"
                              "pipe.set_progress_bar_config(disable=True)\n"
                              "image = pipe(num_inference_steps=2).images[0]\n"
                              "print(json.dumps([ON_COLAB, ddlearn.__file__, image.size]))")
        on_colab, module_file, size = json.loads(out.strip().splitlines()[-1])
        assert on_colab and module_file.startswith(str(target)), out
        assert size == [32, 32]
        execute(client, install_cell())  # a second run is harmless
        execute(client, "import importlib; importlib.reload(ddlearn)\n"
                        "assert DDPMPipeline.from_pretrained(shipped_model('ddpm-butterflies-32'))")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert not any(content.iterdir()), "the install cell left files in the working directory"
