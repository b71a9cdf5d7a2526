#!/usr/bin/python3
"""Stand-in for the exe.dev lobby (`ssh exe.dev new|ls|rm ... --json`), for tests.

Run as an sshd *forced command* (authorized_keys):
    command="/usr/bin/python3 /path/lobby.py --state /path/lobbydir",no-pty,... ssh-ed25519 AAAA...
sshd puts what the client asked for in $SSH_ORIGINAL_COMMAND. Use /usr/bin/python3 (an
absolute path): sshd sessions have a fixed PATH, pyenv shims are not on it.

State directory:
    pool.json    written by the test: the "VMs" that `new` can hand out, e.g.
                 [{"ssh_host": "127.0.0.2", "ssh_port": 22, "ssh_user": "root"}, ...]
                 optional per entry: "wipe_dir": a dir whose contents `rm` deletes (fresh VM)
    state.json   kept by the lobby: {"vms": {"<name>": {...vm...}}}
    calls.log    one line per call: the original command (for test assertions)
    fail_<cmd>   if present (e.g. fail_new), <cmd> fails: exit 1, file content as message
    delay_<cmd>  if present, sleep that many seconds (float) before answering

JSON answers (stdout, one object, newline-terminated; mirrors exe.dev field names):
    new --json      -> VM
    ls --json       -> {"vms": [VM, ...]}          (sorted by vm_name; [] when none)
    rm NAME --json  -> {"vm_name": NAME, "status": "deleted"}
    whoami --json   -> {"email": "flocks-test@example.invalid"}
    any error       -> exit 1, {"error": "..."} on stdout with --json, the message on stderr
  VM = {"vm_name": "flock-abcdef", "status": "running", "ssh_dest": "root@127.0.0.2",
        "ssh_host": "127.0.0.2", "ssh_user": "root", "ssh_port": 22,
        "https_url": "https://flock-abcdef.exe.invalid", "region": "local",
        "region_display": "Local test pool", "created_at": "2026-...Z"}
"""
import fcntl
import json
import os
import random
import re
import shlex
import shutil
import string
import sys
import time
from datetime import datetime, timezone

EMAIL = "flocks-test@example.invalid"


class LobbyError(Exception):
    pass


def load(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def new_name(taken):
    # exe.dev rejects names ending in -<digits>; use letters
    while True:
        n = "flock-" + "".join(random.choice(string.ascii_lowercase) for _ in range(6))
        if n not in taken:
            return n


def cmd_new(st, pool, args):
    name = None
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--name="):
            name = a.split("=", 1)[1]
        elif a == "--name" and i + 1 < len(args):
            i += 1
            name = args[i]
        elif a.startswith("--"):
            pass  # --image=, --no-email, --cpu=... accepted and ignored
        else:
            raise LobbyError(f"new: unexpected argument {a!r}")
        i += 1
    vms = st["vms"]
    if name is not None:
        if not name or name in vms or re.fullmatch(r"[a-z][a-z0-9-]*", name) is None \
                or re.search(r"-[0-9]+$", name):
            raise LobbyError(f"new: invalid or taken name {name!r}")
    used = {(v["ssh_host"], v["ssh_port"]) for v in vms.values()}
    free = [p for p in pool if (p["ssh_host"], p.get("ssh_port", 22)) not in used]
    if not free:
        raise LobbyError(f"new: no capacity: all {len(pool)} pool hosts are allocated")
    p = free[0]
    name = name or new_name(vms)
    user = p.get("ssh_user", "root")
    vm = {
        "vm_name": name,
        "status": "running",
        "ssh_host": p["ssh_host"],
        "ssh_user": user,
        "ssh_port": p.get("ssh_port", 22),
        "ssh_dest": f"{user}@{p['ssh_host']}",
        "https_url": f"https://{name}.exe.invalid",
        "region": "local",
        "region_display": "Local test pool",
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if p.get("wipe_dir"):
        vm["wipe_dir"] = p["wipe_dir"]
    vms[name] = vm
    return vm, f"Created {name}: ssh {vm['ssh_dest']} -p {vm['ssh_port']}"


def public(vm):
    return {k: v for k, v in vm.items() if k != "wipe_dir"}


def cmd_ls(st, pool, args):
    pats = [a for a in args if not a.startswith("-")]
    vms = sorted(st["vms"].values(), key=lambda v: v["vm_name"])
    if pats:
        import fnmatch
        vms = [v for v in vms if any(fnmatch.fnmatch(v["vm_name"], p) for p in pats)]
    text = "\n".join(f"{v['vm_name']}\t{v['status']}\t{v['ssh_dest']}:{v['ssh_port']}" for v in vms)
    return {"vms": [public(v) for v in vms]}, text or "No VMs found"


def cmd_rm(st, pool, args):
    names = [a for a in args if not a.startswith("-")]
    if len(names) != 1:
        raise LobbyError("rm: usage: rm <vm> [--json]")
    name = names[0]
    vm = st["vms"].pop(name, None)
    if vm is None:
        raise LobbyError(f"rm: vm not found: {name}")
    wd = vm.get("wipe_dir")
    if wd and os.path.isdir(wd):
        for e in os.listdir(wd):
            p = os.path.join(wd, e)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
    return {"vm_name": name, "status": "deleted"}, f"Deleted {name}"


def cmd_whoami(st, pool, args):
    return {"email": EMAIL}, EMAIL


COMMANDS = {"new": cmd_new, "ls": cmd_ls, "rm": cmd_rm, "whoami": cmd_whoami}
HELP = "commands: new [--name=N] [--json] | ls [pattern] [--json] | rm <vm> [--json] | whoami [--json] | help"


def main():
    argv = sys.argv[1:]
    if len(argv) != 2 or argv[0] != "--state":
        print("usage: lobby.py --state DIR   (as an sshd forced command)", file=sys.stderr)
        return 2
    sdir = argv[1]
    orig = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    with open(os.path.join(sdir, "calls.log"), "a") as f:
        f.write(orig + "\n")
    try:
        words = shlex.split(orig)
    except ValueError as e:
        print(f"bad command line: {e}", file=sys.stderr)
        return 2
    want_json = "--json" in words
    words = [w for w in words if w != "--json"]
    if not words or words[0] in ("help", "--help", "-h"):
        print(HELP)
        return 0
    cmd, args = words[0], words[1:]

    def fail(msg):
        if want_json:
            print(json.dumps({"error": msg}))
        print(msg, file=sys.stderr)
        return 1

    if cmd not in COMMANDS:
        return fail(f"unknown command: {cmd!r}; {HELP}")
    delay = os.path.join(sdir, f"delay_{cmd}")
    if os.path.exists(delay):
        time.sleep(float(open(delay).read().strip() or "1"))
    fault = os.path.join(sdir, f"fail_{cmd}")
    if os.path.exists(fault):
        return fail(open(fault).read().strip() or f"{cmd}: injected failure")

    # one lobby call at a time (flocks may run several `new` concurrently)
    with open(os.path.join(sdir, "lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        pool = load(os.path.join(sdir, "pool.json"), [])
        spath = os.path.join(sdir, "state.json")
        st = load(spath, {"vms": {}})
        try:
            obj, text = COMMANDS[cmd](st, pool, args)
        except LobbyError as e:
            return fail(str(e))
        save(spath, st)
    if cmd == "new":
        obj = public(obj)
    print(json.dumps(obj, sort_keys=True) if want_json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
