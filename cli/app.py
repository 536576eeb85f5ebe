"""Command-line entry points: ``megafc`` (a Hydra app) and ``megafc-plugins``."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from megafc.core.errors import ConfigError, MegafcError
from .job_names import register_resolver

log = logging.getLogger("megafc")
register_resolver()  # at import: sweep launchers' worker processes import this module too

#: Exit codes: bad input/config/plugin, unexpected internal error, bad diagnostics.
EXIT_ERROR = 2
EXIT_INTERNAL = 3
EXIT_DIAGNOSTICS = 4


def _want_traceback() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("MEGAFC_TRACEBACK", "HYDRA_FULL_ERROR"))


#: Operating-system errors that are about the user's folders and disks, not megafc's code.
USER_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EEXIST: "a file is in the way of the folder",
}


def os_error_message(exc: OSError) -> str | None:
    """One paragraph for a disk or permission problem, naming the path; None for other errors."""
    if exc.errno not in USER_OS_ERRORS:
        return None
    where = exc.filename if exc.filename is not None else "(path not reported by the system)"
    return (
        f"cannot write or read {where}: {USER_OS_ERRORS[exc.errno]}. Free space, fix the folder's "
        "permissions, or choose another output folder (hydra.run.dir=... for megafc, --out for "
        "megafc-compare and megafc-calibrate)"
    )


def fail(exc: BaseException, writes: bool = True) -> NoReturn:
    """Report an error as one paragraph and exit non-zero (``writes``: the command writes
    results, so say that none were)."""
    if isinstance(exc, MegafcError):
        message, code = str(exc), EXIT_ERROR
    elif isinstance(exc, OSError) and os_error_message(exc):
        message, code = os_error_message(exc), EXIT_ERROR
    else:
        message = (
            f"internal error: {type(exc).__name__}: {exc}. This is likely a bug in megafc or a "
            "plugin; please report it with the traceback (set MEGAFC_TRACEBACK=1 to see it)"
        )
        code = EXIT_INTERNAL
    if log.hasHandlers():  # into megafc.log; without a handler Python would print it a second time
        log.error(message)
    if _want_traceback():
        traceback.print_exception(exc)
    print(f"megafc: error: {message}", file=sys.stderr)
    if not _want_traceback():
        nothing = "no results were written; " if writes and getattr(exc, "nothing_written", True) else ""
        print(f"({nothing}set MEGAFC_TRACEBACK=1 for a traceback)", file=sys.stderr)
    exit_job(code, message)


def exit_job(code: int, message: str) -> NoReturn:
    """Exit with ``code``; in a sweep's job, fail that job instead, so Hydra goes on with the
    other jobs (an exit ended the whole sweep, and no message said the rest never ran)."""
    if _in_multirun():
        raise JobFailed(message, code)
    sys.exit(code)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # not inside a Hydra job
        return False


def _job_failed_base() -> type:
    from hydra.errors import CompactHydraException  # Hydra prints these as one line, no traceback

    return CompactHydraException


class JobFailed(_job_failed_base()):
    """A sweep job's failure, carried back to the sweep (also from joblib's worker processes):
    Hydra reports the first failed job when every job has run, and the sweep exits with its code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.message, self.code = message, code

    def __str__(self) -> str:
        return f"megafc: a job failed (exit {self.code}): {self.message}"


class Terminated(BaseException):
    """SIGTERM (``timeout``, SLURM's time limit, ``kill``) as an exception, so the run's staging
    folder, lock and worker processes are cleaned up as on any other failure."""

    def __init__(self, signum: int, survivors: list[int] | None = None) -> None:
        super().__init__(f"terminated by signal {signum}")
        #: Child processes a sweep's launcher handed the signal on to that had not ended.
        self.signum, self.survivors = signum, survivors or []


def _on_sigterm(signum, frame) -> None:
    if os.getpid() != _on_sigterm.pid:  # a forked worker (sampler chain, report section): just die
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if os.getpid() == _launcher and sweeping:  # a sweep's launcher: its jobs may run in workers
        _stopping(os.getpid()).touch()
        raise Terminated(signum, pass_on(signum))
    raise Terminated(signum)


#: The process ``main`` runs in; None in a process that did not start from it (a joblib
#: launcher's worker, a submitit job), whose sweep job is then tied to the process that started it.
_launcher: int | None = None
#: Set when Hydra starts a sweep in this process (``MarkSweepLauncher.on_multirun_start``):
#: whatever started it (``--multirun``, ``hydra.mode=MULTIRUN`` in an experiment config).
sweeping = False


def _proc_children() -> list[int]:
    """This process's live child processes (Linux /proc; elsewhere none are known)."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == me and state != "Z":
            out.append(int(stat.parent.name))
    return out


def _takes(pid: int, signum: int) -> bool:
    """Whether process ``pid`` is alive and does not ignore ``signum`` (a resource tracker does)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        return False
    ignored = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:")), 0)
    return not ignored & (1 << (signum - 1))


def _stopping(launcher: int) -> Path:
    """Exists while a sweep's launcher (pid ``launcher``) is stopping: its workers' jobs, handed
    the signal, then end their worker too (a job terminated alone leaves its worker to the sweep)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"megafc-sweep-stopping-{launcher}"


def pass_on(signum: int, wait: float = 15.0) -> list[int]:
    """Hand a termination signal on to this process's children and give them ``wait`` seconds to
    end: a joblib sweep's jobs run in worker processes that outlived the launcher it killed (they
    sampled on, orphaned); signalled, each job removes its staging folder and lock as it ends.
    Returns the children that had not ended (a launcher's controller that manages its jobs
    itself, as submitit's does)."""
    import time

    children = [pid for pid in _proc_children() if _takes(pid, signum)]
    for pid in children:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while children and time.monotonic() < deadline:
        time.sleep(0.1)
        children = [pid for pid in children if _takes(pid, signum)]
    return children


@contextmanager
def sigterm_as_exception():
    """Within the block, SIGTERM raises ``Terminated`` in this process (only the main thread can
    catch signals); the handler before it is put back after. A handler someone else installed
    (submitit's, which requeues a preempted SLURM job) is left alone."""
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    _on_sigterm.pid = os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _quiet_libraries() -> None:
    import warnings

    # PyMC warns about < 4 chains on every run; our diagnostics report the same honestly.
    warnings.filterwarnings("ignore", message=".*fewer than 4 chains.*")
    # PyTensor's C backend finds no BLAS to link on pip-only installs; megafc's models spend their
    # time in numba kernels and small matrices, so the warning (18 lines) says nothing useful here.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation")
    from megafc.core.registry import default_registry

    # the modelling libraries the plugins declare log every sampler step at INFO
    for info in default_registry().rows():
        for name in ("arviz", *getattr(info.cls, "packages", ())):
            logging.getLogger(name).setLevel(logging.WARNING)


def _task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from megafc.core.run_folder import settle_hydra_record

    _quiet_libraries()
    if _launcher is None and _in_multirun():  # a sweep's job in a launcher's worker process
        from megafc.core.processes import die_with_parent

        die_with_parent(os.getppid())  # killed outright (SIGKILL, out of memory), the sweep takes its jobs along
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        _run_task(cfg, run_dir)
    finally:
        settle_hydra_record(run_dir)


def _run_task(cfg, run_dir: str) -> None:
    import time

    from megafc.core.pipeline import run_experiment
    from megafc.core.registry import default_registry
    from megafc.core.run_folder import COMPLETION_MARKER

    started = time.time()
    with sigterm_as_exception():
        try:
            if not cfg.rerun and already_complete(run_dir, cfg):
                log.info("%s already holds a complete run of this config; skipping (rerun=true to redo it)", run_dir)
                if cfg.fail_on_bad_diagnostics and not recorded_diagnostics_ok(run_dir):
                    diagnostics_failed(run_dir)
                return
            outcome = run_experiment(cfg, default_registry(), run_dir)
        except Terminated as exc:
            marker = Path(run_dir) / COMPLETION_MARKER
            landed = marker.exists() and marker.stat().st_mtime >= started
            what = (f"its results had been written to {run_dir} before" if landed
                    else "no results were written (the run's staging folder was removed)")
            log.error("%s; %s", exc, what)
            print(f"megafc: {exc}; {what}", file=sys.stderr)
            if _launcher is None and _in_multirun() and _stopping(os.getppid()).exists():
                # the whole sweep stops: end this worker too, or its launcher waits for it
                from megafc.core.run_folder import settle_hydra_record

                settle_hydra_record(run_dir)
                logging.shutdown()
                sys.stderr.flush()
                os._exit(128 + exc.signum)
            sys.exit(128 + exc.signum)
        except JobFailed:  # a sweep job's failure already reported (diagnostics of a skipped run)
            raise
        except Exception as exc:
            fail(exc)
    if cfg.fail_on_bad_diagnostics and not outcome.diagnostics_ok:
        diagnostics_failed(outcome.run_dir)


def diagnostics_failed(run_dir) -> NoReturn:
    message = (f"diagnostics failed (rows flagged in effects.tsv or summaries.tsv, column 'ok', or the sampler's "
               f"own checks: see warnings.tsv and diagnostics.tsv in {run_dir}); "
               "exiting non-zero because fail_on_bad_diagnostics=true")
    print(f"megafc: error: {message}", file=sys.stderr)
    exit_job(EXIT_DIAGNOSTICS, message)


def recorded_diagnostics_ok(run_dir: str) -> bool:
    """What a finished run recorded about its diagnostics (provenance.json ``diagnostics_ok``;
    runs that did not record it: effects.tsv's ``ok`` column)."""
    import json
    from pathlib import Path

    import pandas as pd

    from megafc.core.run_folder import COMPLETION_MARKER

    recorded = json.loads((Path(run_dir) / COMPLETION_MARKER).read_text()).get("diagnostics_ok")
    if recorded is not None:
        return bool(recorded)
    effects = Path(run_dir) / "effects.tsv"
    if not effects.exists():
        return True
    ok = pd.read_csv(effects, sep="\t", usecols=lambda c: c == "ok")
    return "ok" not in ok or not (ok["ok"].astype(str).str.lower() == "false").any()


def already_complete(run_dir: str, cfg) -> bool:
    """True when run_dir has a finished run (provenance.json) of exactly this resolved config,
    made from the inputs as they are now (a changed input file is said, and the run redone)."""
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    from megafc.core.fingerprints import changed_inputs, fingerprint_value
    from megafc.core.run_folder import COMPLETION_MARKER

    marker = Path(run_dir) / COMPLETION_MARKER
    if not marker.exists():
        return False
    try:
        recorded = json.loads(marker.read_text()).get("config_fingerprint")
    except ValueError:
        return False
    current = OmegaConf.to_container(cfg, resolve=True)
    current.pop("rerun", None)
    if recorded != fingerprint_value(current):
        return False
    changed = changed_inputs(run_dir, (current.get("dataset") or {}).get("metadata"), config=current)
    if changed:
        log.warning("%s holds a finished run of this config, but its inputs changed since (%s%s); running it again",
                    run_dir, "; ".join(changed[:5]), f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
    return not changed


def check_output_folders(overrides: list[str]) -> None:
    """Refuse up front an output folder that cannot be created, before Hydra writes into it.

    Hydra creates the folder and writes its own files before megafc runs, so without this a
    read-only or misspelt location ends in a long Hydra traceback instead of a sentence.
    """
    from pathlib import Path

    from megafc.core.config import override_key
    from megafc.core.errors import ConfigError

    folders = {}
    for arg in overrides:
        key, value = override_key(arg)
        if value is not None and key in ("hydra.run.dir", "hydra.sweep.dir"):
            folders[f"config key '{key}' ({value})"] = value
    if not folders:
        folders["the current folder (where outputs/ and multirun/ go by default)"] = os.getcwd()
    for what, value in folders.items():
        literal = value.split("${", 1)[0].strip("'\"") or "."
        folder = Path(literal).expanduser().absolute()
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{what}: {existing} is a file, so the output folder {folder} cannot be created")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{what}: folder {existing} is not writable (permission denied or read-only file "
                "system), so no results could be saved; choose a writable output folder"
            )


def main() -> None:
    """``megafc [overrides]``: compose the config from installed plugins and run it."""
    import hydra

    from megafc.core.config import register_configs
    from megafc.core.registry import default_registry

    if "--version" in sys.argv[1:]:  # Hydra's own --version names Hydra, not the program
        from megafc.core.fingerprints import package_versions

        v = package_versions()
        print(f"megafc {v.get('megafc', 'unknown')} (hydra-core {v.get('hydra-core', '?')}, "
              f"nilearn {v.get('nilearn', '?')}, numpy {v.get('numpy', '?')})")
        return
    writes = not {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--resolve"} & set(sys.argv[1:])
    try:
        if writes:
            check_output_folders(sys.argv[1:])
        register_configs(default_registry())
    except Exception as exc:
        fail(exc)
    global _launcher
    _launcher = os.getpid()
    try:
        with sigterm_as_exception():  # in a job, the job handles it (_run_task)
            hydra.main(config_path="pkg://megafc.conf", config_name="config", version_base="1.3")(_task)()
    except Terminated as exc:  # before a job started, or a sweep's launcher
        terminated(exc)
    except JobFailed as exc:  # re-raised by Hydra as it is under HYDRA_FULL_ERROR=1
        sys.exit(exc.code)
    except SystemExit as exc:
        if isinstance(exc.__context__, JobFailed):  # a sweep with a failed job: that job's code
            sys.exit(exc.__context__.code)
        # Hydra exits 1 on a config it cannot compose (unknown key or plugin, wrong type): bad
        # config, which is exit 2 for megafc like its own config errors
        sys.exit(EXIT_ERROR if exc.code == 1 else exc.code)
    finally:
        _stopping(os.getpid()).unlink(missing_ok=True)


def terminated(exc: Terminated) -> NoReturn:
    """The message and exit code of megafc terminated outside a job (a sweep's launcher, which
    handed the signal on to its jobs, or a run not yet started)."""
    if not sweeping:
        message = f"megafc: {exc}; no results were written"
    elif exc.survivors:
        message = (f"megafc: the sweep was {exc}; {len(exc.survivors)} of its processes did not stop (pid(s) "
                   f"{', '.join(map(str, exc.survivors))}): jobs a launcher manages itself (submitit's) run on "
                   "until cancelled there. Finished jobs' results stand (megafc-compare names the missing ones)")
    else:
        message = (f"megafc: the sweep was {exc}; its running jobs were stopped and wrote nothing, finished jobs' "
                   "results stand (megafc-compare names the jobs that are missing)")
    log.error(message)
    print(message, file=sys.stderr)
    sys.exit(128 + exc.signum)


def config_presets() -> list[tuple[str, str, str]]:
    """(group, name, file) of the config presets megafc ships next to its plugins (e.g. pymc_quick)."""
    from importlib.resources import files

    from megafc.core.plugin import PLUGIN_KINDS

    root = files("megafc.conf")
    out = []
    for kind in PLUGIN_KINDS:
        folder = root / kind
        if folder.is_dir():
            out += [(kind, f.name.removesuffix(".yaml"), f"megafc/conf/{kind}/{f.name}")
                    for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".yaml")]
    return out


def list_plugins_main(argv: list[str] | None = None) -> None:
    """``megafc-plugins [KIND ...] [--json] [--show KIND/NAME]``: the installed plugins."""
    import argparse
    import json

    from megafc.core.plugin import PLUGIN_KINDS
    from megafc.core.registry import default_registry

    kinds = list(PLUGIN_KINDS)
    ap = argparse.ArgumentParser(
        prog="megafc-plugins",
        description="Every installed plugin (kind, name, providing distribution, version, class), the config "
                    "presets megafc ships, plugins that only implement hooks, and entry points that failed to load.")
    ap.add_argument("kinds", nargs="*", metavar="KIND", help=f"only these kinds ({', '.join(kinds)})")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--show", metavar="KIND/NAME", help="one plugin's config keys: type, default and documentation")
    args = ap.parse_args(argv)
    try:
        unknown = sorted(set(args.kinds) - set(kinds))
        if unknown:
            raise ConfigError(f"megafc-plugins: unknown kind(s) {unknown}; expected some of {kinds}")
        registry = default_registry()
        if args.show:
            return _show_plugin(registry, args.show, args.json)
        rows = [{"kind": r.kind, "name": r.name, "distribution": r.distribution, "version": r.version,
                 "class": r.location, "summary": r.cls.summary()} for r in registry.rows()]
        rows += [{"kind": kind, "name": name, "distribution": "megafc", "version": "", "class": f"preset: {where}",
                  "summary": ""} for kind, name, where in config_presets()]
        if args.kinds:
            rows = [r for r in rows if r["kind"] in args.kinds]
        hooks = [] if args.kinds else registry.hook_plugins()
        broken = registry.broken
    except Exception as exc:
        fail(exc, writes=False)
    if args.json:
        _print(json.dumps({"plugins": rows, "hook_plugins": hooks, "broken": broken}, indent=2))
        return
    header = ("kind", "name", "distribution", "version", "class")
    table = [header] + [tuple(r[k] for k in header) for r in rows]
    table += [("hooks", h["name"], h["distribution"], h["version"], f"{h['module']}: {h['hooks']}") for h in hooks]
    table += [("BROKEN", b["entry_point"], b["distribution"], "", f"not loaded: {b['error']}") for b in broken]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    _print("\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in table))


def _show_plugin(registry, which: str, as_json: bool) -> None:
    """``--show pooling/pymc``: where the plugin comes from and every config key it takes."""
    import json

    from megafc.core.plugin import config_fields

    kind, _, name = which.partition("/")
    if not name:
        raise ConfigError(f"megafc-plugins --show '{which}': expected KIND/NAME, e.g. pooling/<name> "
                          "(megafc-plugins lists the names)")
    preset = {(k, n): where for k, n, where in config_presets()}.get((kind, name))
    values = None
    if preset is not None and name not in registry.plugins.get(kind, {}):
        from omegaconf import OmegaConf

        from megafc.core.config import compose

        values = compose([f"{kind}={name}"])[kind]  # the preset's values, on its plugin's defaults
        info = registry.get(kind, str(values.name))
    else:
        info = registry.get(kind, name)
    fields = config_fields(info.cls.Config)
    if values is not None:
        fields = [{**f, "default": OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v}
                  for f in fields for v in [OmegaConf.select(values, f["key"], default=f["default"])]]
    refs = _default_references(info.cls)
    out = {"kind": kind, "name": name, "distribution": info.distribution, "version": info.version,
           "class": info.location, "summary": info.cls.summary(),
           **({"preset_of": info.name, "preset_file": preset} if values is not None else {}),
           "references": refs,
           "packages": list(getattr(info.cls, "packages", ())),
           "config": [{**f, "default": f["default"] if isinstance(f["default"], (str, int, float, bool, list, dict,
                                                                                    type(None))) else repr(f["default"])}
                      for f in fields]}
    if as_json:
        _print(json.dumps(out, indent=2, default=str))
        return
    lines = [f"{kind}/{name}: {out['summary']}",
             *([f"  preset of    {kind}/{info.name} ({preset}); defaults below are the preset's"]
               if values is not None else []),
             f"  class        {info.location}",
             f"  distribution {info.distribution} {info.version}".rstrip()]
    lines += [f"  cites        {r}" for r in refs]
    lines += ["", f"config keys (megafc {kind}.<key>=<value>):" if fields else "no config keys"]
    for f in fields:
        lines.append(f"  {kind}.{f['key']}: {f['type']} = {f['default']!r}")
        if f["doc"]:
            lines += [f"      {line}" for line in _wrap(f["doc"], 88)]
    _print("\n".join(lines))


def _default_references(cls: type) -> list[str]:
    """What the plugin cites with its default config (references may depend on the config)."""
    from megafc.core.references import plugin_references

    try:
        return plugin_references(cls())
    except Exception:  # a plugin that cannot be built without settings: its class-level list
        refs = getattr(cls, "references", ())
        return [str(r) for r in refs] if isinstance(refs, (list, tuple)) else []


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _print(text: str) -> None:
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `megafc-plugins | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
