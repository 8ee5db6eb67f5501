"""Packaging glue that pyproject.toml cannot express: the shipped checkpoints travel in the wheel.

The checkpoints (data/models/) and the figures the chapters show (data/figures/) live at the top
of the repository. A wheel copies data/ to ddlearn/data/shipped/, where `ddlearn.data.DATA_ROOT`
looks first, so a plain `pip install` (Colab, `pip install git+URL`, a wheel) works offline. An
editable install skips the copy: DATA_ROOT is then data/ beside the package.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = Path(__file__).parent / "data"


class build_py_with_checkpoints(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "ddlearn" / "data" / "shipped"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(DATA, target)


setup(cmdclass={"build_py": build_py_with_checkpoints})
