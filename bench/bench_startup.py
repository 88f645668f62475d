"""Start-up: ``ursus --selftest`` wall time and peak RSS; the window's idle RSS with the gateway on.

    python bench/bench_startup.py [--runs 3] [--quick]

- ``ursus --selftest`` (Qt loads, a sandbox gateway starts, one sale goes through end
  to end, everything stops) run ``--runs`` times in fresh processes: wall time and
  peak RSS of each (``os.wait4``'s rusage of that child); also the frozen build
  ``dist/ursus/ursus --selftest`` when it exists.
- The window (offscreen) in a fresh process, as ``ursus`` opens it, then its gateway
  started with live-shaped settings against a sandbox in another process: time until
  the window shows with the gateway running, then RSS after 3 s idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load_average, machine

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit code, last output line) of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace")
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.strip()]
    return wall, usage.ru_maxrss / 1024, proc.returncode, lines[-1] if lines else ""


def child_idle() -> int:
    """In a fresh process: open the window, start its gateway, idle 3 s; print JSON figures."""
    # Wall clock from the parent's Popen: the interpreter's own start counts too.
    t0 = float(os.environ.get("BENCH_T0", time.time()))
    from bench.common import (
        SandboxProcess,
        desktop_env,
        open_window,
        peak_rss_mb,
        process_events_until,
        rss_mb,
    )

    t_before_sandbox = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp_name, SandboxProcess() as sb:
        tmp = Path(tmp_name)
        t_sandbox = time.time() - t_before_sandbox  # the stand-in's start: not URSUS's
        desktop_env(tmp)
        app, controller, window = open_window(tmp, sb)
        t_window = time.time() - t0 - t_sandbox
        controller.start()
        process_events_until(lambda: controller.is_running and not controller.busy, 20)
        t_running = time.time() - t0 - t_sandbox
        window.grab()
        process_events_until(lambda: False, 3.0)
        figures = {
            "window_shown_s": t_window,
            "gateway_running_s": t_running,
            "idle_rss_mib": rss_mb(),
            "peak_rss_mib": peak_rss_mb(),
            "running": controller.is_running,
        }
        controller.shutdown()
        window.close()
        del app
    print(json.dumps(figures))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--child-idle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_idle:
        return child_idle()
    if args.quick:
        args.runs = 1
    print(machine())
    print(f"load average at the start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {
            **os.environ,
            "QT_QPA_PLATFORM": "offscreen",
            "URSUS_CONFIG_DIR": f"{tmp}/config",
            "URSUS_DATA_DIR": f"{tmp}/data",
            "URSUS_LOG_DIR": f"{tmp}/logs",
        }
        targets = [("ursus --selftest", [str(VENV_BIN / "ursus"), "--selftest"])]
        frozen = ROOT / "dist" / "ursus" / "ursus"
        if frozen.exists():
            targets.append(("dist/ursus/ursus --selftest (frozen)", [str(frozen), "--selftest"]))
        ok = True
        for name, cmd in targets:
            runs = [run_measured(cmd, env) for _ in range(args.runs)]
            walls = [r[0] for r in runs]
            rss = [r[1] for r in runs]
            failed = [r for r in runs if r[2] != 0]
            ok &= not failed
            print(
                f"{name}: wall median {statistics.median(walls):.2f} s "
                f"(min {min(walls):.2f}, max {max(walls):.2f}), peak RSS median "
                f"{statistics.median(rss):.0f} MiB over {args.runs} runs"
                + (f"  FAILED: {failed[0][3]}" if failed else "")
            )
            print(f"  {runs[-1][3]}")
        env["BENCH_T0"] = repr(time.time())
        _wall, _peak, code, last = run_measured(
            [sys.executable, str(Path(__file__).resolve()), "--child-idle"], env
        )
        if code != 0:
            print(f"window idle: FAILED ({last})")
            return 1
        figures = json.loads(last)
        print(
            f"window + gateway (live-shaped settings, sandbox in another process): window shown "
            f"{figures['window_shown_s']:.2f} s after the process started (the stand-in's own start"
            f" excluded), gateway running at "
            f"{figures['gateway_running_s']:.2f} s"
        )
        print(
            f"  idle RSS after 3 s: {figures['idle_rss_mib']:.0f} MiB "
            f"(peak {figures['peak_rss_mib']:.0f} MiB)"
        )
    print(f"load average at the end: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
