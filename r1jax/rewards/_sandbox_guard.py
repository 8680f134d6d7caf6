"""Runs inside a sandbox child, before and around the untrusted program. Started by `r1jax.rewards.sandbox`
(inside bwrap or `_sandbox_ns.py` when isolated, as the unprivileged uid when the caller is root) as

    python -I -S guard.py WORKDIR PROGRAM CPU_S MEMORY_BYTES FSIZE_BYTES NOFILE STATUS_FD WALL_S HOOK

Standard library only and never imported by r1jax (`-I` keeps its directory off sys.path). Order of events:

1. Close every inherited descriptor but stdin/stdout/stderr and STATUS_FD (a launcher's descriptor on a host
   directory would be a way around the read-only view).
2. If we are pid 1 of a fresh pid namespace, fork: the parent stays as a minimal init that reaps everything, exits
   with the program's status, and exits anyway WALL_S seconds later (a second wall clock, inside); when it exits the
   kernel SIGKILLs every process left in the namespace.
3. Resource limits (CPU seconds, address space, file size, open files, no core dumps, no new processes).
4. Read and compile the program; report "compiled"/"syntax_error" on STATUS_FD and close it.
5. Install an audit hook (cannot be removed from Python) that refuses network, process creation, signals to other
   processes, native-code loading, limit changes, namespace changes and file-system writes outside WORKDIR.
   (HOOK=0 leaves it out: only tests do that, to show what the kernel layers hold alone.)
6. exec the program as `__main__`.

The audit hook is defence in depth, not a security boundary (PEP 578 says so): native code could bypass it, and
Python code has found ways around blocklists before. The boundary is the kernel: namespaces, a read-only view, an
unprivileged uid and rlimits (`r1jax/rewards/isolation.py`, docs/security.md).
"""

import os
import sys

BLOCKED_IMPORTS = frozenset(
    {
        "_ctypes", "ctypes", "cffi", "_socket", "socket", "_ssl", "ssl", "_posixsubprocess", "subprocess",
        "_multiprocessing", "multiprocessing", "pty", "resource", "_xxsubinterpreters", "_xxinterpchannels",
        "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_tkinter",
        # They create files with no audit event on the way (SQLite's own open(), readline's history files).
        "_sqlite3", "sqlite3", "readline",
    }
)
BLOCKED_EVENT_PREFIXES = (
    "socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
    "os.system", "os.kill", "os.killpg", "os.link", "os.symlink", "os.startfile", "pty.", "resource.setrlimit",
    "resource.prlimit", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.",
    "telnetlib.", "os.add_dll_directory",
    # The hook's own state (the WORKDIR it allows) lives in a closure; without the gc walkers nothing can reach it.
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.unshare", "os.setns",
    # Relative paths are judged against WORKDIR; subinterpreters would start without this hook.
    "os.chdir", "cpython.PyInterpreterState_New",
)
# event -> (positions of path arguments, positions of dir_fd arguments)
PATH_EVENTS = {
    "os.mkdir": ((0,), (2,)),
    "os.rmdir": ((0,), (1,)),
    "os.remove": ((0,), (1,)),
    "os.rename": ((0, 1), (2, 3)),
    "os.truncate": ((0,), ()),
    "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)),
    "os.utime": ((0,), (3,)),
    "os.chflags": ((0,), ()),
    "os.lchflags": ((0,), ()),
    "os.setxattr": ((0,), ()),
    "os.removexattr": ((0,), ()),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _close_inherited(keep: int) -> None:
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def _run_as_namespace_init(status_fd: int, wall_s: int) -> None:
    """pid 1 of a new pid namespace: fork the real work, reap every child, exit with the program's status (or 137
    after `wall_s` seconds: the init of a pid namespace ignores signals it has no handler for, so it gets one)."""
    child = os.fork()
    if child == 0:
        return
    os.close(status_fd)  # only the worker reports; the parent process sees EOF once the worker closed it
    import signal

    signal.signal(signal.SIGALRM, lambda signum, frame: os._exit(137))
    signal.setitimer(signal.ITIMER_REAL, wall_s)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def _set_limits(cpu_s: int, memory_bytes: int, fsize_bytes: int, nofile: int) -> None:
    import resource

    def limit(which: int, soft: int, hard: int) -> None:
        # Never above an existing hard limit (only root may raise one): the stricter of ours and the inherited one.
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))

    limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)  # SIGXCPU, then SIGKILL a second later
    limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    limit(resource.RLIMIT_FSIZE, fsize_bytes, fsize_bytes)  # beyond: writes fail (Python ignores SIGXFSZ)
    limit(resource.RLIMIT_NOFILE, nofile, nofile)
    limit(resource.RLIMIT_CORE, 0, 0)
    # No new processes or threads. Binding for non-root users only: the kernel exempts root (CAP_SYS_RESOURCE).
    limit(resource.RLIMIT_NPROC, 0, 0)
    del sys.modules["resource"]  # a later `import resource` goes through the import hook and is refused


def _install_audit_hook(workdir: str) -> None:
    """Installs the hook. It must survive hostile code running after it in the same interpreter, so it only uses
    values captured here (closure cells, unreachable once the gc walkers are refused) and methods of exact
    str/bytes/tuple/list objects: monkey-patching `os`, `os.path` or `builtins` cannot change its decisions."""
    from stat import S_ISDIR

    root = os.path.realpath(workdir)
    prefix = root + "/"
    stat, type_, str_, bytes_, int_, len_, join = os.stat, type, str, bytes, int, len, "".join
    import_error, permission_error, os_error = ImportError, PermissionError, OSError
    blocked_imports, blocked_prefixes, path_events = BLOCKED_IMPORTS, BLOCKED_EVENT_PREFIXES, PATH_EVENTS
    write_flags = WRITE_FLAGS

    def refuse(event, detail=None):
        raise permission_error(f"sandbox: {event}{'' if detail is None else f' {detail!r}'} is not allowed")

    def as_str(event, path):
        # Only exact str/bytes: a str subclass or os.PathLike could run code here or answer differently later.
        if type_(path) is bytes_:
            return path.decode("utf-8", "surrogateescape")
        if type_(path) is not str_:
            refuse(event, "path that is not a str or bytes")
        return path

    def inside(path: str) -> bool:
        # Lexical: the cwd is pinned to WORKDIR (chdir is refused) and no symlink or hard link can be made, so
        # no link inside WORKDIR can lead out of it.
        parts = []
        for part in (path if path.startswith("/") else prefix + path).split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return join(("/", "/".join(parts), "/")).startswith(prefix)

    def is_dir(path: str) -> bool:
        try:
            return S_ISDIR(stat(path).st_mode)
        except os_error:
            return False

    def hook(event, args):
        if event == "import":
            # Any dotted part, and the file an extension module is loaded from: `spec_from_file_location(
            # "x._posixsubprocess", path_of_the_so)` loads the real module under another name.
            name = join((args[0],))
            filename = args[1] if len_(args) > 1 and type_(args[1]) is str_ else ""
            stem = filename.rsplit("/", 1)[-1].split(".", 1)[0]
            if stem in blocked_imports or any(part in blocked_imports for part in name.split(".")):
                raise import_error(f"sandbox: import of {name!r} is not allowed")
        elif event.startswith(blocked_prefixes):
            refuse(event)
        elif event == "open":
            path, mode, flags = args
            if path is None or type_(path) is int_:
                return  # an already open descriptor
            path = as_str(event, path)
            if type_(flags) is int_ and flags >= 0:
                writes = flags & write_flags != 0
            else:
                writes = type_(mode) is str_ and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
            # A directory opened outside WORKDIR could serve as dir_fd for a write whose relative name this hook
            # would resolve against WORKDIR: so outside directories cannot be opened at all.
            if not inside(path) and (writes or is_dir(path)):
                refuse(event, path)
        elif event in path_events:
            path_positions, dir_fd_positions = path_events[event]
            for i in dir_fd_positions:
                if i < len_(args) and args[i] is not None and args[i] != -1:
                    refuse(event, "dir_fd")
            for i in path_positions:
                path = args[i]
                if type_(path) is int_:
                    if event != "os.truncate":  # truncating needs a descriptor opened for writing: checked above
                        refuse(event, "file descriptor")
                elif not inside(as_str(event, path)):
                    refuse(event, path)

    sys.addaudithook(hook)


def main() -> None:
    workdir, program_path = sys.argv[1], sys.argv[2]
    cpu_s, memory_bytes, fsize_bytes, nofile, status_fd, wall_s, hook = (int(a) for a in sys.argv[3:10])
    _close_inherited(status_fd)
    if os.getpid() == 1:
        _run_as_namespace_init(status_fd, wall_s)
    _set_limits(cpu_s, memory_bytes, fsize_bytes, nofile)
    with open(program_path, encoding="utf-8", errors="replace") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        os.write(status_fd, b"syntax_error\n")
        os.close(status_fd)
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    os.write(status_fd, b"compiled\n")
    os.close(status_fd)
    del source
    if hook:
        _install_audit_hook(workdir)
    sys.argv = ["solution.py"]
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
