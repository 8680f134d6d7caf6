"""The 'namespaces' isolation route: builds the sandbox with kernel namespaces directly, then execs the guard.

Started by `r1jax.rewards.isolation` as `python -I -S _sandbox_ns.py SPEC_JSON` where SPEC is

    {"root": empty host directory to build the view on, "binds": [[host_src, dst, "dir"|"dev"], ...],
     "symlinks": [[target, dst], ...], "box": host directory bound read-only at "/sandbox",
     "scratch": "/work", "scratch_bytes": int, "uid": int, "gid": int, "argv": [...], "env": {...}, "cwd": str}

Standard library and ctypes only; never imported by r1jax, and the untrusted program never runs in this
interpreter (it is replaced by `execve` once the sandbox stands, so ctypes is gone with it). Order of events:

1. unshare(mount, pid, net, IPC, UTS, cgroup) -- plus user when not root (an unprivileged user namespace
   mapping only our own uid/gid is what lets a normal user build mounts).
2. fork: the child is pid 1 of the new pid namespace; this process only waits and passes the exit status on.
   The child asks for SIGKILL when this process dies, and shares its process group, so killing the group from
   outside takes down the whole namespace.
3. The child builds the view on a tmpfs: read-only binds of the system and interpreter directories, a fresh
   /proc (of the new pid namespace only), /dev with null/zero/full/random/urandom, the box read-only at /sandbox,
   a size-capped tmpfs scratch (the only writable place), then remounts the root read-only and pivots into it.
4. As root: drop supplementary groups, gid and uid to the unprivileged ids (all capabilities go with them), then
   enter a fresh user namespace mapping only those ids. Then no_new_privs, and execve the guard (a non-root
   execve drops whatever capabilities a user namespace gave).

Any failure exits with status 125 and one line `r1jax-sandbox-setup: <step>: <reason>` on stderr.
"""

import ctypes
import json
import os
import platform
import sys

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_PRIVATE = 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 4096  # the same bits as statvfs's ST_* flags
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}
SETUP_FAILED = 125

libc = ctypes.CDLL(None, use_errno=True)


def fail(step, reason=None):
    if reason is None:
        reason = os.strerror(ctypes.get_errno())
    os.write(2, f"r1jax-sandbox-setup: {step}: {reason}\n".encode())
    os._exit(SETUP_FAILED)


def check(result, step):
    if result != 0:
        fail(step)


def enc(s):
    return None if s is None else s.encode()


def mount(src, dst, fstype, flags, data, step):
    check(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), step)


def write(path, text):
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        fail(f"write {path}", e.strerror)


def map_ids(uid, gid):
    """Maps exactly (uid, gid) to themselves in the user namespace we just entered: nobody else exists there."""
    write("/proc/self/setgroups", "deny")
    write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    write("/proc/self/gid_map", f"{gid} {gid} 1\n")


def bind_read_only(src, dst, device):
    """A read-only bind of `src` on `dst` (non-recursive where the kernel allows: submounts stay hidden)."""
    if libc.mount(enc(src), enc(dst), None, ctypes.c_ulong(MS_BIND), None) != 0:
        # In a user namespace a non-recursive bind of a tree with locked submounts is refused (EINVAL).
        mount(src, dst, None, MS_BIND | MS_REC, None, f"bind {src}")
    # Flags the source mount has are locked in a user namespace: a remount must keep them.
    kept = os.statvfs(src).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | kept | (0 if device else MS_NODEV)
    mount(None, dst, None, flags, None, f"remount {dst} read-only")


def build_view(spec):
    new = spec["root"].rstrip("/")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None, "make / private")  # nothing propagates back to the host
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755", "tmpfs root")
    for target, dst in spec["symlinks"]:
        os.makedirs(os.path.dirname(new + dst), exist_ok=True)
        os.symlink(target, new + dst)
    for src, dst, kind in spec["binds"] + [[spec["box"], "/sandbox", "dir"]]:
        if kind == "dev":
            os.makedirs(os.path.dirname(new + dst), exist_ok=True)
            os.close(os.open(new + dst, os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            os.makedirs(new + dst, exist_ok=True)
        bind_read_only(src, new + dst, kind == "dev")
    os.makedirs(new + "/proc")
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, "mount /proc")
    scratch = new + spec["scratch"]
    os.makedirs(scratch)
    options = f"size={spec['scratch_bytes']},mode=0700,uid={spec['uid']},gid={spec['gid']}"
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, options, "tmpfs scratch")
    mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None, "remount / read-only")
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        fail("pivot_root", f"unknown syscall number on {platform.machine()}")
    os.chdir(new)
    check(libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")  # old root now stacked on top of the new
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


def drop_to(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # from root to non-root: every capability is cleared here
    check(libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "set dumpable")  # else /proc/self/uid_map stays root's
    check(libc.unshare(CLONE_NEWUSER), "unshare user namespace")
    map_ids(uid, gid)


def main():
    spec = json.loads(sys.argv[1])
    as_root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
    if not as_root:
        uid, gid = os.geteuid(), os.getegid()
        check(libc.unshare(flags | CLONE_NEWUSER), "unshare user, mount, pid, net, ipc, uts, cgroup namespaces")
        map_ids(uid, gid)
    else:
        uid, gid = spec["uid"], spec["gid"]
        check(libc.unshare(flags), "unshare mount, pid, net, ipc, uts, cgroup namespaces")
    spec["uid"], spec["gid"] = uid, gid
    child = os.fork()
    if child:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    check(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "set parent-death signal")
    build_view(spec)
    if as_root:
        drop_to(uid, gid)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    os.chdir(spec["cwd"])
    try:
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as e:
        fail(f"execve {spec['argv'][0]}", e.strerror)


if __name__ == "__main__":
    main()
