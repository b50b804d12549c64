"""Cost at scale: wall time, peak RSS and output size of each bge-export step, one real CLI subprocess at a time.

    python benchmarks/scale.py --model MODEL_DIR --label "mpnet (110M)" --steps export,int8,tensorrt-int8 \
        --work DIR --results results.jsonl [--timeout SECONDS]
    python benchmarks/scale.py --recipe configs/bge-base-en-v1.5.yaml --model MODEL_DIR --label "mpnet (110M)" \
        --work DIR --results results.jsonl [--dry-run]
    python benchmarks/scale.py --table results.jsonl

Each step writes into its own folder under --work (DIR/<label>/<step>/out), so steps never share work: an INT8
step exports again, and a step built from an export (tensorrt-*, openvino*) first makes a plain export there, timed
apart ("setup") and not counted in the step's numbers. Per step one JSON line is appended: the exact command, wall
seconds, the child's peak RSS (os.wait4's rusage: the bge-export process and the processes it waited for, never
this harness), the bytes of the files the step added, the exit (or the limit it hit, and stderr's last line),
and os.getloadavg() before it; once per run a line names the machine (CPU, the flags that decide INT8 and bf16
speed, memory, the checkout's commit). --recipe runs `bge-export build` on a copy of the recipe pointed at
MODEL_DIR, adjusted where the recipe's values do not fit that model (each change printed and written into the
copy), and records the whole build and each of its steps. Measure on quiet cores: the load is printed beside
every number so a disturbed one shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the recipe checks use this checkout's bge_export, as the steps do
    sys.path.insert(0, str(ROOT))
CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx_vnni")
MARKER = ".scale-step"  # marks a step folder this harness made, so a rerun may replace it (and nothing else)

# step -> (the command it measures, with {model} and {out}; whether it first needs a plain export in {out})
SETUP = ("onnx", "-m", "{model}", "-o", "{out}")
STEPS: dict[str, tuple[tuple[str, ...], bool]] = {
    "export": (SETUP, False),
    "optimize": ((*SETUP, "--optimize"), False),
    "fp16": ((*SETUP, "--fp16"), False),
    **{q: ((*SETUP, "--quantize", q), False) for q in ("int8", "int8-static", "int8-openvino")},
    "tensorrt-fp16": (("tensorrt", "{out}", "--precision", "fp16", "--prepare-only"), True),
    "tensorrt-int8": (("tensorrt", "{out}", "--precision", "int8", "--prepare-only"), True),
    "coreml": (("coreml", "-m", "{model}", "-o", "{out}", "--precision", "fp16"), False),
    "coreml-int8": (("coreml", "-m", "{model}", "-o", "{out}", "--precision", "fp16", "--compress", "int8"), False),
    "openvino": (("openvino", "{out}", "--precision", "fp32"), True),
    "openvino-int8": (("openvino", "{out}", "--precision", "int8"), True),
}


class HarnessError(Exception):
    """Bad input to the harness: one line, exit 2."""


# --- the machine ---

def machine() -> dict[str, Any]:
    """The CPU by name, the flags that decide INT8/bf16 speed, cores and memory, and the code measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown CPU")
    flags_line = next((line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    flags = {f: f in flags_line.split() for f in CPU_FLAGS} if flags_line is not None else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name, "flags": flags, "cores": os.cpu_count(), "usable_cores": usable,
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "platform": platform.platform(), "python": platform.python_version(), "commit": _commit()}


def _commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else None


def machine_line(m: dict[str, Any]) -> str:
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m["flags"].items()) if m.get("flags") else \
        "CPU flags unknown"
    return (f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_bytes'] / 1e9:.1f} GB memory; "
            f"{flags}; {m['platform']}, Python {m['python']}; bge-export {m.get('commit') or 'commit unknown'}")


# --- one child, measured ---

def run_child(args: list[str], log_dir: Path, name: str, timeout: float | None) -> dict[str, Any]:
    """Run `bge-export ARGS` (this checkout's code) with stdout/stderr in log_dir; its wall time, its peak RSS
    (wait4: the child and what it waited for), its exit or the limit it hit, and stderr's last line on failure."""
    argv = [sys.executable, "-m", "bge_export.cli", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    load = list(os.getloadavg())
    err_path = log_dir / f"{name}.stderr"
    with open(log_dir / f"{name}.stdout", "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
        limit = None
        try:
            status, usage = _wait(child.pid, None if timeout is None else started + timeout)
            if status is None:
                limit = f"timeout after {timeout:g} s"
                status, usage = _stop(child.pid)
        except BaseException:  # Ctrl-C: never leave the step running behind the harness
            _stop(child.pid)
            raise
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    code = child.returncode
    if limit is None and code < 0:
        limit = f"killed by {signal.Signals(-code).name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"command": shlex.join(["bge-export", *args]), "argv": argv, "wall_s": round(wall, 2),
            "peak_rss_bytes": usage.ru_maxrss * scale, "exit": code, "limit": limit,
            "error": _last_line(err_path) if code != 0 else None, "load_before": [round(x, 2) for x in load]}


def _wait(pid: int, deadline: float | None) -> tuple[int | None, Any]:
    while True:
        done, status, usage = os.wait4(pid, 0 if deadline is None else os.WNOHANG)
        if done:
            return status, usage
        if time.perf_counter() >= deadline:  # type: ignore[operator]
            return None, None
        time.sleep(0.5)


def _stop(pid: int) -> tuple[int, Any]:
    """Stop the step we started (its own process group), politely, then for good; reap it for its rusage."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, None)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        status, usage = _wait(pid, None if grace is None else time.perf_counter() + grace)
        if status is not None:
            return status, usage
    raise AssertionError("unreachable")


def _last_line(path: Path) -> str | None:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def files_by_size(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def step_path(work: Path, label: str, step: str) -> Path:
    """work/<label as a name>/<step>; one that exists must be this harness's (it is replaced, nothing else is)."""
    folder = work / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "model") / step
    if folder.exists() and not (folder / MARKER).is_file():
        raise HarnessError(f"{folder} exists and was not made by this harness; choose another --work")
    return folder


def step_folder(work: Path, label: str, step: str) -> Path:
    """The step's folder, made afresh."""
    folder = step_path(work, label, step)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by benchmarks/scale.py; replaced on the next run of this step\n")
    return folder


def run_step(model: Path, label: str, step: str, work: Path, timeout: float | None) -> dict[str, Any]:
    template, needs_export = STEPS[step]
    folder = step_folder(work, label, step)
    out = folder / "out"
    fill = {"model": str(model), "out": str(out)}
    setup = None
    if needs_export:
        setup = run_child([a.format(**fill) for a in SETUP], folder, "setup", timeout)
        setup = {k: setup[k] for k in ("command", "wall_s", "peak_rss_bytes", "exit", "limit", "error")}
        if setup["exit"] != 0:
            command = shlex.join(["bge-export", *(a.format(**fill) for a in template)])
            return {"step": step, "command": command, "setup": setup,
                    "wall_s": None, "peak_rss_bytes": None, "exit": None, "limit": None, "load_before": None,
                    "error": f"setup export failed: {setup['limit'] or setup['error']}", "output_bytes": 0, "outputs": {}}
    before = files_by_size(out)
    row = run_child([a.format(**fill) for a in template], folder, "step", timeout)
    added = {path: size for path, size in files_by_size(out).items() if path not in before}
    return {"step": step, **row, "setup": setup, "output_bytes": sum(added.values()), "outputs": added,
            "recorded_costs": recorded_costs(out)}


def recorded_costs(folder: Path) -> dict[str, Any]:
    """What the manifest itself records each artifact cost (its inner steps' time and peak RSS), where it does."""
    try:
        artifacts = json.loads((folder / "manifest.json").read_text()).get("artifacts") or []
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(a.get("path")): a["cost"] for a in artifacts if isinstance(a, dict) and a.get("cost")}


# --- the flagship recipe on another model ---

def rewrite_recipe(recipe: dict[str, Any], model: str, output: str, max_seq_length: int,
                   query_prompt: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """A copy of `recipe` that builds `model` into `output`, with what does not fit that model changed (the hub
    pin, a forced pooling, shapes past its max_seq_length), and one line per change."""
    from bge_export.targets.tensorrt.options import Profile, parse_profile

    data = json.loads(json.dumps(recipe))  # a deep copy of plain YAML values
    notes = []
    original = str(data.get("model"))
    data["model"], data["output"] = model, output
    for key, why in (("revision", f"the hub commit of {original}; {model} is a local folder"),
                     ("model_id", f"it names {original}, not the model in {model}"),
                     ("pooling", "the model's own pooling applies")):
        if key in data:
            notes.append(f"{key}: {data.pop(key)!r} dropped: {why}")
    if "prompts" not in data and "bge-" in original.lower():
        notes.append(f"query prompt: {query_prompt!r} (the model's own)" if query_prompt else
                     f"query prompt: none: bge-export gives {original}'s query instruction to bge-* models only, and "
                     "this model's config has no prompts; validate encodes queries as they are")
    targets = data.get("targets") or {}
    tensorrt = targets.get("tensorrt") or {}
    if tensorrt.get("profiles"):
        profiles = [parse_profile(str(p)) for p in tensorrt["profiles"]]
        capped = [Profile(p.batch, tuple(min(n, max_seq_length) for n in p.seq)).label for p in profiles]
        if capped != [p.label for p in profiles]:
            notes.append(f"targets.tensorrt.profiles: seq capped at max_seq_length {max_seq_length}: {capped}")
        tensorrt["profiles"] = capped
    for section, key in (("targets.coreml", "seq_lens"), ("validation", "seq_lens")):
        values = (targets.get("coreml") if section == "targets.coreml" else data.get("validation")) or {}
        lens = values.get(key)
        if isinstance(lens, list) and any(int(n) > max_seq_length for n in lens):
            kept = sorted({int(n) for n in lens if int(n) <= max_seq_length} | {max_seq_length})
            notes.append(f"{section}.{key}: {lens} -> {kept} (max_seq_length {max_seq_length})")
            values[key] = kept
    coreml = targets.get("coreml") or {}
    if coreml.get("seq_range"):
        low, high = (int(n) for n in re.split(r"[:,]", str(coreml["seq_range"]).strip("[]() ")))
        if high > max_seq_length:
            coreml["seq_range"] = f"{low}:{max_seq_length}"
            notes.append(f"targets.coreml.seq_range: {low}:{high} -> {low}:{max_seq_length}")
    return data, notes


def step_times(folder: Path, stdout: str, stderr: str, wall: float) -> dict[str, dict[str, Any]]:
    """Each build step's seconds (and whatever cost it records beside them, e.g. peak RSS), from the manifest's
    build records where the build got that far, else the summary it printed, else its progress lines (a step
    still running when the build stopped: 'unfinished', timed to the end)."""
    steps: dict[str, dict[str, Any]] = {}
    for match in re.finditer(r"^\[\s*([\d.]+)s\] build: ([\w ]+?): (.+)$", stderr, re.M):
        at, name, what = float(match[1]), match[2], match[3]
        if what.startswith("running"):
            steps[name] = {"state": "unfinished", "seconds": round(wall - at, 1)}
        elif done := re.match(r"([\w ]+?) in ([\d.]+)s", what):
            steps[name] = {"state": done[1], "seconds": float(done[2])}
    for match in re.finditer(r"^(\S+(?: \S+)*?)\s{2,}([A-Z][A-Z ]*?)(?: in ([\d.]+)s)?(?::|$)", stdout, re.M):
        steps[match[1]] = {"state": match[2].lower(), "seconds": float(match[3]) if match[3] else None}
    try:
        records = json.loads((folder / "manifest.json").read_text())["build"]["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        records = {}
    for name, record in records.items() if isinstance(records, dict) else ():
        if isinstance(record, dict) and name in steps:  # this build's steps only, not an older build's
            record = {**record, **(record["cost"] if isinstance(record.get("cost"), dict) else {})}
            steps[name].update({k: record[k] for k in ("seconds", "peak_rss_bytes", "peak_method") if k in record})
    return steps


def run_recipe(recipe_path: Path, model: Path, label: str, work: Path, timeout: float | None,
               dry_run: bool) -> list[dict[str, Any]]:
    import yaml

    from bge_export.errors import BgeExportError
    from bge_export.model.source import read_spec, resolve_model
    from bge_export.recipes.recipe import load_recipe

    try:
        load_recipe(recipe_path)  # the project's own checks first: a bad recipe is one line with file:line
        spec = read_spec(resolve_model(str(model)))
        folder = step_folder(work, label, f"recipe-{recipe_path.stem}" + ("-dry-run" if dry_run else ""))
        data, notes = rewrite_recipe(yaml.safe_load(recipe_path.read_text()), str(model.resolve()),
                                     str(folder / "out"), spec.max_seq_length, spec.query_prompt)
        notes.insert(0, f"model: {spec.model_type}, pooling {spec.pooling}, max_seq_length {spec.max_seq_length}, "
                        f"{'normalized' if spec.normalize else 'not normalized'}")
        copy = folder / recipe_path.name
        header = "".join(f"# {line}\n" for line in [f"{recipe_path} for {model}, by benchmarks/scale.py:", *notes])
        copy.write_text(header + yaml.safe_dump(data, sort_keys=False))
        print("\n".join(f"recipe adjusted: {note}" for note in notes), flush=True)
        adjusted = load_recipe(copy)
        for name in adjusted.targets:  # what build checks before its first step, so a bad key fails now
            adjusted.check_target(name)
    except BgeExportError as exc:
        raise HarnessError(str(exc)) from None
    args = ["build", str(copy), *(["--dry-run"] if dry_run else [])]
    row = run_child(args, folder, "build", timeout)
    added = files_by_size(folder / "out")
    whole = {"step": f"recipe {recipe_path.name}" + (" (dry run)" if dry_run else ""), "recipe": str(recipe_path),
             "adjusted": notes, **row, "output_bytes": sum(added.values()), "outputs": added}
    rows = [whole]
    stdout, stderr = ((folder / f"build.{s}").read_text(errors="replace") for s in ("stdout", "stderr"))
    for name, cost in step_times(folder / "out", stdout, stderr, row["wall_s"]).items():
        prefix = "" if name in ("validate", "model card", "sign") else f"{name}/"
        size = None if dry_run else sum(v for k, v in added.items() if k.startswith(prefix)) if prefix else \
            sum(v for k, v in added.items() if k.startswith("report.")) if name == "validate" else None
        rows.append({"step": f"recipe: {name}", "state": cost.pop("state"), "wall_s": cost.pop("seconds"),
                     "peak_rss_bytes": cost.pop("peak_rss_bytes", None), "recorded": cost, "output_bytes": size,
                     "exit": None, "load_before": None})
    return rows


# --- the table ---

def render_table(lines: list[dict[str, Any]]) -> str:
    """The markdown table of every step line (model label x step), the machine(s) they ran on above it."""
    machines: dict[str, int] = {}
    run_machine: dict[str, int] = {}
    for line in lines:
        if line.get("kind") == "machine":
            text = machine_line(line)
            run_machine[line["run"]] = machines.setdefault(text, len(machines) + 1)
    rows = [line for line in lines if line.get("kind") == "step"]
    several = len(machines) > 1
    head = [f"Machine{f' {n}' if several else ''}: {text}" for text, n in machines.items()] or ["Machine: not recorded"]
    columns = ["model", "step", "wall", "peak RSS GB", "output", "load before", "exit"] + (["machine"] if several else [])
    out = [*head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row.get("label", ""), row["step"].strip(), _seconds(row.get("wall_s")),
                 "—" if row.get("peak_rss_bytes") is None else f"{row['peak_rss_bytes'] / 1e9:.2f}",
                 _size(row.get("output_bytes")),
                 "—" if not row.get("load_before") else f"{row['load_before'][0]:.2f}", _exit(row)]
        if several:
            cells.append(str(run_machine.get(row.get("run"), "?")))
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _size(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.1f} MB"


def _exit(row: dict[str, Any]) -> str:
    if row.get("state"):
        return row["state"]
    if row.get("limit"):
        return row["limit"]
    if row.get("exit") is None:
        return row.get("error") or "did not run"
    return str(row["exit"]) + (f": {row['error'][:100]}" if row.get("error") else "")


def read_results(path: Path) -> list[dict[str, Any]]:
    lines = []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except ValueError:
                raise HarnessError(f"{path}:{number} is not a JSON line; pass a file this harness wrote") from None
    return lines


# --- the command line ---

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a local model folder")
    parser.add_argument("--label", help='the table\'s row name, e.g. "mpnet (110M)"  [default: the folder name]')
    parser.add_argument("--steps", help=f"comma-separated, run in this order: {', '.join(STEPS)}")
    parser.add_argument("--recipe", type=Path, help="run `bge-export build` on a copy of this recipe for --model")
    parser.add_argument("--dry-run", action="store_true", help="with --recipe: only check the plan (build --dry-run)")
    parser.add_argument("--work", type=Path, help="where each step's folder goes")
    parser.add_argument("--results", type=Path, help="JSON lines file to append to")
    parser.add_argument("--timeout", type=float, help="seconds a step may run before it is stopped (a row says so)")
    parser.add_argument("--table", type=Path, help="render this results file as a markdown table and exit")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.table is not None:
        if not args.table.is_file():
            raise HarnessError(f"--table {args.table}: no such file; pass the --results file of a run")
        print(render_table(read_results(args.table)))
        return 0
    missing = [f"--{n}" for n in ("model", "work", "results") if getattr(args, n) is None]
    if missing or (args.steps is None) == (args.recipe is None):
        raise HarnessError(f"give --model, --work, --results and one of --steps or --recipe (missing: "
                           f"{', '.join(missing) or '--steps or --recipe'}), or --table RESULTS")
    if not (args.model / "config.json").is_file():
        raise HarnessError(f"--model {args.model}: not a model folder (no config.json); pass a local model folder")
    steps = [s.strip() for s in (args.steps or "").split(",") if s.strip()]
    if unknown := [s for s in steps if s not in STEPS]:
        raise HarnessError(f"--steps: unknown {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    if args.recipe is not None and not args.recipe.is_file():
        raise HarnessError(f"--recipe {args.recipe}: no such file")
    label = args.label or args.model.resolve().name
    for step in steps:  # before anything runs or is written
        step_path(args.work, label, step)
    run = uuid.uuid4().hex[:12]
    stamp = {"run": run, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "machine", **stamp, **machine()}]
    with open(args.results, "a", encoding="utf-8") as results:
        results.write(json.dumps(lines[0]) + "\n")
        results.flush()
        for step in steps or [None]:  # one JSON line per row, written as soon as the step ends
            if step is None:
                rows = run_recipe(args.recipe, args.model, label, args.work, args.timeout, args.dry_run)
            else:
                print(f"[{label}] {step}: running", flush=True)
                rows = [run_step(args.model, label, step, args.work, args.timeout)]
                print(f"[{label}] {step}: {_exit(rows[0])}, {_seconds(rows[0]['wall_s'])}", flush=True)
            for row in rows:
                lines.append({"kind": "step", **stamp, "label": label, "model": str(args.model), **row})
                results.write(json.dumps(lines[-1]) + "\n")
            results.flush()
    print(render_table(lines))
    failed = [row for row in lines[1:] if row.get("limit") or row.get("exit") not in (0, None) or
              (row.get("exit") is None and row.get("error"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
