"""The ``lw`` command.

``lw serve`` runs the backend service; ``lw jobs run`` runs one job kind inline. Other parts add their own
subcommands: every module of ``CLI_MODULES`` that exists exposes ``add_parser(subparsers)``, which adds its
subcommand(s) with ``set_defaults(func=...)``; ``func(args)`` returns an exit code (or None for 0). Keep heavy
imports (torch, FastAPI) inside those functions so ``lw --help`` stays fast.

Errors the user can act on (``LWError``) are printed to stderr as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import sys
import uuid
from pathlib import Path

from .errors import InvalidInput, LWError, one_line

CLI_MODULES: list[str] = ["backend.world.cli", "backend.moe.cli", "backend.io.cli", "backend.doctor"]

PARENT_POLL_S = 1.0


def default_workspace() -> Path:
    """``$LW_WORKSPACE`` or ``~/.cache/livingworld``."""
    return Path(os.environ.get("LW_WORKSPACE") or Path.home() / ".cache" / "livingworld").expanduser()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (POSIX: signal 0; Windows: its handle is not yet signalled)."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: still running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_loopback(address: str) -> bool:
    """Whether the numeric address a socket is bound to only accepts connections from this machine."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int):
    """A listening TCP socket on ``host:port`` (port 0: a free one, chosen by the OS)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without it a
    # keep-alive client waits ~40 ms (Nagle + delayed ACK) for every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LWError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port or --host") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the HTTP service; print one JSON line ``{"url", "token", "pid", "workspace"}`` once it listens."""
    import asyncio
    import secrets
    import signal

    import uvicorn

    from .jobs import PathPolicy
    from .server import create_app

    token = args.token or os.environ.get("LW_TOKEN") or secrets.token_urlsafe(32)
    workspace = Path(args.workspace).expanduser().resolve()
    if args.parent_pid is not None and not process_alive(args.parent_pid):
        raise InvalidInput(f"--parent-pid {args.parent_pid}: no such process")
    allowed = tuple(Path(p).expanduser().resolve() for p in args.allow_path)
    missing = [str(p) for p in allowed if not p.is_dir()]
    if missing:
        raise InvalidInput(f"--allow-path {', '.join(missing)}: not a folder; name existing folders")
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    policy = PathPolicy() if is_loopback(host) else PathPolicy.confined(workspace, allowed)
    try:
        app = create_app(workspace, token, ray_address=args.ray or os.environ.get("LW_RAY") or None, policy=policy)
    except BaseException:
        sock.close()
        raise
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on"))
    # uvicorn re-raises the signal that stopped it once its graceful shutdown is done; by then the service has
    # stopped cleanly, so that second delivery should just let the process exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)

    async def announce_when_ready() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.005)
        line = json.dumps({"url": url, "token": token, "pid": os.getpid(), "workspace": str(workspace)})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        # From now on stdout carries nothing: job output goes to stderr, so a client that reads only the first
        # line never blocks us on a full pipe.
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    async def watch_parent() -> None:
        while not server.should_exit:
            if not process_alive(args.parent_pid):
                print(f"lw serve: parent process {args.parent_pid} is gone; stopping", file=sys.stderr)
                server.should_exit = True
                return
            await asyncio.sleep(PARENT_POLL_S)

    async def main() -> None:
        tasks = [asyncio.create_task(announce_when_ready())]
        if args.parent_pid is not None:
            tasks.append(asyncio.create_task(watch_parent()))
        try:
            await server.serve(sockets=[sock])
        finally:
            for task in tasks:
                task.cancel()

    asyncio.run(main())
    sock.close()
    return 0 if server.started else 1


def cmd_jobs_run(args: argparse.Namespace) -> int:
    """Run one job kind inline; progress to stderr, ``{"job_id", "artifacts", "workspace"}`` to stdout."""
    from pydantic import ValidationError

    from .jobs import registry, run_inline
    from .server.models import strict_params

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--params is not valid JSON: {exc}") from exc
    spec = registry().get(args.kind)
    if spec is None:
        raise InvalidInput(f"unknown job kind {args.kind!r}; known: {', '.join(sorted(registry()))}")
    try:
        model = strict_params(spec.params).model_validate(params)
    except ValidationError as exc:
        raise InvalidInput(f"invalid --params for {args.kind!r}: {exc}") from exc
    workspace = Path(args.workspace).expanduser().resolve()
    job_id = f"inline-{uuid.uuid4().hex[:12]}"

    def on_progress(fraction: float, message: str) -> None:
        print(f"[{fraction:6.1%}] {message}", file=sys.stderr, flush=True)

    artifacts = run_inline(args.kind, model, workspace, job_id=job_id, on_progress=on_progress)
    print(json.dumps({"job_id": job_id, "artifacts": artifacts, "workspace": str(workspace)}), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lw", description="LivingWorld backend command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the backend HTTP service",
                           description=cmd_serve.__doc__)
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    serve.add_argument("--token", default=None, help="bearer token (default: $LW_TOKEN or a random one)")
    serve.add_argument("--workspace", default=None, type=Path,
                       help="workspace folder (default: $LW_WORKSPACE or ~/.cache/livingworld)")
    serve.add_argument("--parent-pid", type=int, default=None,
                       help="stop when this process dies (checked every second)")
    serve.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                       help="bound to an address other than loopback, jobs read and write only inside the workspace "
                            "and these folders (repeatable); on loopback (the default) they may use any path the "
                            "OS user can")
    serve.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                       help="run jobs as tasks on a Ray cluster instead of the local worker: 'auto' (the cluster "
                            "`ray start` runs on this machine), 'local' (start one here) or its HOST:PORT / "
                            "ray://HOST:PORT (default: $LW_RAY; unset: the local worker). See docs/SCALING.md")
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    jobs = sub.add_parser("jobs", help="job kinds without a server")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    run = jobs_sub.add_parser("run", help="run one job kind inline", description=cmd_jobs_run.__doc__)
    run.add_argument("kind", help="job kind (see GET /kinds)")
    run.add_argument("--params", default="{}", help="parameters as a JSON object (default {})")
    run.add_argument("--workspace", default=None, type=Path,
                     help="workspace folder (default: $LW_WORKSPACE or ~/.cache/livingworld)")
    run.set_defaults(func=cmd_jobs_run)

    for name in CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise  # a missing dependency inside an existing module: surface it
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workspace", "unset") is None:
        args.workspace = default_workspace()
    try:
        return args.func(args) or 0
    except LWError as exc:
        print(f"lw: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
