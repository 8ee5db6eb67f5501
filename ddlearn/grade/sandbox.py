"""Run one notebook for grading: its own process, its own folder, offline, with time limits.

`python -m ddlearn.grade.sandbox NOTEBOOK FOLDER RESULTS CELL_TIMEOUT` executes NOTEBOOK in a fresh
kernel whose working directory is FOLDER, and writes the executed notebook next to RESULTS. The
grader (`ddlearn.grade.score`) starts it with `subprocess` and kills the process group when the
whole notebook runs past its limit, so nothing a submission does can stop the other submissions.

Inside the kernel, `confine(folder, results)` (the first cell the grader adds) installs a Python
audit hook (PEP 578) that refuses, with a `PermissionError` naming the path:
- opening a file for writing, creating, renaming or deleting anything outside FOLDER;
- starting processes (`subprocess`, `os.system`, `!pip`): grading runs offline on what is installed
  (read-only probes may run: `ldconfig` and `uname` for the standard library, `fc-list` for
  matplotlib).
Each refusal is also written to RESULTS, so the grade report can say what the notebook tried. An
audit hook cannot be removed once installed. It guards against mistakes, not against a student
who sets out to fool the grader in the same process: see the instructors' page.

A cell that runs past CELL_TIMEOUT seconds is interrupted (a `KeyboardInterrupt` in the kernel)
and the notebook goes on with the next cell.
"""

import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.remove": 1, "os.rename": 2, "os.rmdir": 1, "os.mkdir": 1, "os.truncate": 1,
               "os.symlink": 2, "os.link": 2, "os.chmod": 1, "shutil.rmtree": 1}
SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                "os.fork", "pty.spawn")
#: read-only system probes: ctypes.util.find_library, platform, matplotlib's font list
PROBES = ("ldconfig", "uname", "fc-list")


def confine(folder, results):
    """Refuse, for the rest of this process, writes outside `folder` and new processes."""
    root, results = os.path.realpath(folder), os.path.realpath(results)

    def inside(path) -> bool:
        if isinstance(path, int):  # an open file descriptor: what it points to was checked
            return True
        path = os.path.realpath(os.fsdecode(path))
        return path == results or path.startswith(root + os.sep) or path == root \
            or path.startswith("/dev/")

    def refuse(what: str):
        with open(results, "a", encoding="utf-8") as file:
            file.write(json.dumps({"violation": what}) + "\n")
        raise PermissionError(f"grading: {what} is not allowed while a notebook is graded")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or (flags or 0) & WRITE_FLAGS
            if writing and path is not None and not inside(path):
                refuse(f"writing outside the notebook's folder ({os.fsdecode(path)})")
        elif event in PATH_EVENTS:
            for path in args[:PATH_EVENTS[event]]:
                if not inside(path):
                    refuse(f"changing files outside the notebook's folder ({event} "
                           f"{os.fsdecode(path)})")
        elif event.startswith(SPAWN_EVENTS):
            program = os.path.basename(os.fsdecode(args[0])) if args and args[0] else ""
            if not (event == "subprocess.Popen" and program in PROBES):
                refuse(f"starting a process ({event} {program})".replace(" )", ")"))

    sys.addaudithook(hook)


def environment(folder: Path, results: Path, threads: int, seed: int, quick: bool) -> dict:
    """The kernel's environment: offline, every cache inside `folder`, the hidden cases' seed."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("JPY_", "JUPYTER", "PYTEST", "DDLEARN_"))}
    cache = folder / "cache"  # torch writes its cache dir into os.environ: never inherit one
    env.update(XDG_CACHE_HOME=str(cache), TORCHINDUCTOR_CACHE_DIR=str(cache / "torchinductor"),
               TRITON_CACHE_DIR=str(cache / "triton"))
    env.update(HOME=str(folder), TMPDIR=str(folder / "tmp"), MPLCONFIGDIR=str(folder / "mpl"),
               IPYTHONDIR=str(folder / "ipython"), HF_HOME=str(folder / "hf"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DDLEARN_GRADING_RESULTS=str(results), MPLBACKEND="Agg",
               PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), DDLEARN_HIDDEN_SEED=str(seed),
               DDLEARN_QUICK="1" if quick else "0")
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def execute(notebook_path, folder, results, cell_timeout: int):
    """Execute the notebook in `folder`; write it, with outputs, to `executed.ipynb` by RESULTS."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(notebook_path, as_version=4)
    timeout_error = {"ename": "CellTimeoutError", "traceback": [],
                     "evalue": f"the cell ran past its {cell_timeout} s limit and was "
                               f"interrupted (an infinite loop?)"}
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3",
                            allow_errors=True, interrupt_on_timeout=True,
                            error_on_timeout=timeout_error, startup_timeout=120,
                            resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    finally:
        nbformat.write(notebook, Path(results).with_name("executed.ipynb"))


if __name__ == "__main__":
    execute(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
