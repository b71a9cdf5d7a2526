#!/bin/sh
# flocks helper: the agent-side half of every backend whose agent has a
# repository of its own. Transports (flocks starts it; the script is flocks'
# own constant text, never task data):
#   ssh / exe.dev:  ssh HOST exec /bin/sh <remote_dir>/helper.sh
#                   (installed there; its root is the script's directory)
#   docker clone:   a docker exec of `sh -c <this script> flocks-helper` under
#                   flocks' reaper (which runs it as the pool's exec user, and
#                   stops whatever it leaves running), stdin/stdout attached
#   others:         any stdin/stdout pair, the script as `sh -c` text
# With FLOCKS_HELPER_ROOT set (an absolute path) that is the root directory;
# otherwise the script's own directory is. Layout under the root:
# mirror.git (bare: the objects sent in, refs/flocks/start/<task>),
# worktrees/<task> (the task's own repository, kept across its attempts,
# its objects shared with mirror.git through alternates), setup.done.
# Everything it needs comes on stdin, never on the command line: nothing from a
# task (id, branch, prompt, env, secrets) is ever part of a shell string.
#
# stdin: "FLOCKS-HELPER 1", then "op <op>", then "key value" lines
# (LF-terminated; a value is the rest of the line). Ops:
#   init      make the root and mirror.git        -> root, setup
#   check     what the host has                   -> root, git, agent_path, agent_version, free_kb, tar, setup
#   have      does mirror.git have `start`?       -> start yes|no, have SHA (0..64: tips it has)
#   receive   objects in: a bundle of refs/flocks/start, fetched as refs/flocks/start/<task>
#   prepare   worktrees/<task> (a repository) on `branch` at `start` -> worktree PATH, [setup_mark H];
#             or, not prepared: "start no" and have SHA lines (send it first), or
#             with "salvage yes", what an interrupted attempt left: head SHA, [bundle]
#   include   a tar stream of .worktreeinclude's files, extracted in the worktree
#   mark      record the completed [workspace] setup
#   run       the agent (ssh pools; docker runs agents under its reaper)
#   finish    commit leftovers; objects out       -> leftovers yes|no, head SHA, [bundle]
#   salvage   what an interrupted attempt left    -> head SHA|none, [bundle]
#   release   remove the task's worktree
#   pack      upkeep of mirror.git: pack-refs past 64 loose refs; repack (no
#             object dropped: -a -d -l -k) past git's gc.auto/autoPackLimit rule
#             -> packed_refs N, gc yes|no, loose_objects N, packs N
# Header keys:
#   task ID          [A-Za-z0-9._@-]+           (prepare, receive, include, mark, run, finish, salvage, release)
#   branch NAME      the task branch            (prepare, finish, salvage)
#   start SHA        commit to start from       (prepare, have)
#   attempt N        attempt number             (finish)
#   have SHA         0..n, commits the host has: left out of the bundle (finish, salvage, prepare)
#   salvage yes      take back an interrupted attempt's work first (prepare)
#   tag VALUE        FLOCKS_ATTEMPT of the tree (run)
#   grace_ds N       TERM -> KILL, tenths of s  (run)
#   heartbeat N      kill if no control line for N s (run; 0 = off)
#   unset NAME       0..n, removed from the agent's env (run)
#   env NAME=VALUE   0..n, for git here and for the agent (all ops)
#   argv WORD        1..n, the agent's argv, program first (run)
#   agent PROGRAM    the agent program          (check)
#   setup_hash H     expected setup marker      (init, check); the worktree's
#                    completed [workspace] setup (mark)
#   end              end of header (every op but run and receive);
#                    after include's, stdin is a tar stream of .worktreeinclude's
#                    files, extracted into the worktree
#   bundle NBYTES    last header line of receive, then exactly NBYTES: a git bundle
#   prompt NBYTES    last header line of run, then exactly NBYTES: the agent's stdin
# stdout: the reply, "key value" lines, nothing else; finish, salvage and prepare may
# end it with "bundle NBYTES" and exactly NBYTES of a git bundle of
# refs/heads/<branch> without the `have` commits (none when the host has
# every commit of the branch). flocks checks what it receives (only that
# branch, strict fsck, a size cap, no rewrite below the task's origin).
# After a run header, stdin is a control channel: "term" (TERM, grace, KILL),
# "kill" (KILL now), "ping"; EOF (flocks or its ssh client gone) = term.
# The agent's stdout/stderr pass through unchanged; helper lines on stderr start
# with "flocks-helper: ", the last one of a run is "flocks-helper: exit rc=N".
set -u
umask 077
ME="flocks-helper"
say() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() { say "error: $*"; exit 2; }

if [ -n "${FLOCKS_HELPER_ROOT:-}" ]; then
  case $FLOCKS_HELPER_ROOT in
    /*) R=$FLOCKS_HELPER_ROOT ;;
    *) die "FLOCKS_HELPER_ROOT is not an absolute path" ;;
  esac
else
  R=$(cd "$(dirname "$0")" && pwd -P) || die "cannot find the remote dir"
fi
M="$R/mirror.git"

exec 3<&0
IFS= read -r magic <&3 || die "no header"
[ "$magic" = "FLOCKS-HELPER 1" ] || die "bad header: $magic"
IFS= read -r opline <&3 || die "no op"
OP=${opline#op }

TASK="" BRANCH="" START="" ATTEMPT="" TAG="" GRACE_DS=30 HEARTBEAT=0 UNSETS="" AGENT=""
SETUP_HASH="" NBYTES="" NBUNDLE="" HAVE_ARGV="" HAVES="" SALVAGE=""
set --
while IFS= read -r line <&3; do
  key=${line%% *}; val=${line#* }
  [ "$key" = "$line" ] && val=""
  case $key in
    task)       TASK=$val ;;
    branch)     BRANCH=$val ;;
    start)      START=$val ;;
    attempt)    ATTEMPT=$val ;;
    tag)        TAG=$val ;;
    grace_ds)   GRACE_DS=$val ;;
    heartbeat)  HEARTBEAT=$val ;;
    agent)      AGENT=$val ;;
    setup_hash) SETUP_HASH=$val ;;
    salvage)    [ "$val" = yes ] || die "bad salvage: $val"; SALVAGE=1 ;;
    have)       case $val in *[!0-9a-f]*|'') die "bad have: $val" ;; esac
                [ ${#val} -eq 40 ] || die "bad have: $val"
                HAVES="$HAVES $val" ;;
    unset)      case $val in ''|[0-9]*|*[!A-Za-z0-9_]*) die "bad unset name: $val" ;; esac
                UNSETS="$UNSETS $val" ;;
    env)        [ -z "$HAVE_ARGV" ] || die "env after argv"
                case ${val%%=*} in ''|[0-9]*|*[!A-Za-z0-9_]*) die "bad env name" ;; esac
                case $val in *=*) ;; *) die "env needs NAME=VALUE" ;; esac
                set -- "$@" "$val" ;;
    argv)       [ -n "$HAVE_ARGV" ] || { HAVE_ARGV=1; set -- "$@" --; }
                set -- "$@" "$val" ;;
    end)        break ;;
    prompt)     NBYTES=$val; break ;;
    bundle)     NBUNDLE=$val; break ;;
    *)          die "unknown header line: $key" ;;
  esac
done
case $GRACE_DS in ''|*[!0-9]*) die "bad grace" ;; esac
case $HEARTBEAT in ''|*[!0-9]*) die "bad heartbeat" ;; esac
case $ATTEMPT in *[!0-9]*) die "bad attempt" ;; esac
case $TASK in *[!A-Za-z0-9._@-]*) die "bad task id" ;; esac
case $BRANCH in -*) die "bad branch" ;; esac
case $START in *[!0-9a-f]*) die "bad start commit" ;; esac
case $SETUP_HASH in *[!0-9a-f]*) die "bad setup hash" ;; esac
W="$R/worktrees/$TASK"
# Outside a run the env lines (git identity, safe.directory) are for our own git.
if [ "$OP" != run ]; then
  for kv in "$@"; do export "$kv"; done
  set --
fi

setup_state() {
  if [ -n "$SETUP_HASH" ] && [ "$(cat "$R/setup.done" 2>/dev/null)" = "$SETUP_HASH" ]; then
    echo "setup done"
  else
    echo "setup needed"
  fi
}

# Objects out: a bundle of refs/heads/$BRANCH without the commits the host
# has ($HAVES), length-prefixed on stdout after the reply lines; nothing when
# the host has them all.
send_bundle() {
  ref="refs/heads/$BRANCH"
  not=""
  for h in $HAVES; do
    git cat-file -e "$h^{commit}" 2>/dev/null && not="$not ^$h"
  done
  # shellcheck disable=SC2086
  [ -n "$(git rev-list -n 1 "$ref" $not -- 2>/dev/null)" ] || return 0
  B=$(mktemp "${TMPDIR:-/tmp}/flocks-bundle.XXXXXX") || die "mktemp failed"
  # shellcheck disable=SC2086
  if ! git bundle create "$B" "$ref" $not >/dev/null 2>&1; then
    rm -f "$B"; die "cannot bundle $ref"
  fi
  n=$(wc -c <"$B"); n=$((n + 0))
  echo "bundle $n"
  cat "$B" || { rm -f "$B"; die "cannot send the bundle"; }
  rm -f "$B"
}

case $OP in
init)
  command -v git >/dev/null 2>&1 || die "git is not installed on this host"
  if [ ! -d "$R" ]; then
    P=${R%/*}
    if [ -n "$P" ] && [ ! -d "$P" ]; then
      # Shared by every project (and user) of the host: sticky, like /tmp.
      (umask 022; mkdir -p "$P") && chmod 1777 "$P" 2>/dev/null
    fi
    mkdir -p "$R" || die "cannot create $R"
  fi
  if [ ! -d "$M" ]; then
    git init -q --bare "$M.tmp.$$" >&2 && mv "$M.tmp.$$" "$M" 2>/dev/null || rm -rf "$M.tmp.$$"
    [ -d "$M" ] || die "cannot create $M"
  fi
  mkdir -p "$R/worktrees" || die "cannot create $R/worktrees"
  echo "root $R"
  setup_state
  exit 0 ;;
check)
  echo "root $R"
  if v=$(git --version 2>/dev/null); then echo "git $v"; else echo "git missing"; fi
  if [ -n "$AGENT" ] && p=$(command -v -- "$AGENT" 2>/dev/null); then
    echo "agent_path $p"
    v=$("$p" --version </dev/null 2>&1 | head -n 1)
    echo "agent_version $v"
  else
    echo "agent_path"
  fi
  echo "free_kb $(df -Pk "$R" 2>/dev/null | awk 'NR==2 {print $4}')"
  if command -v tar >/dev/null 2>&1; then echo "tar yes"; else echo "tar missing"; fi
  setup_state
  exit 0 ;;
have)
  [ -n "$START" ] || die "have needs start"
  if git --git-dir="$M" cat-file -e "$START^{commit}" 2>/dev/null; then
    echo "start yes"
  else
    echo "start no"
  fi
  git --git-dir="$M" for-each-ref --count=64 --sort=-committerdate \
    --format='have %(objectname)' refs/heads refs/flocks/start 2>/dev/null
  exit 0 ;;
receive)
  [ -n "$TASK" ] || die "receive needs task"
  case $NBUNDLE in ''|*[!0-9]*) die "missing bundle length" ;; esac
  B=$(mktemp "${TMPDIR:-/tmp}/flocks-bundle.XXXXXX") || die "mktemp failed"
  head -c "$NBUNDLE" <&3 >"$B"
  got=$(wc -c <"$B")
  [ "$got" -eq "$NBUNDLE" ] || { rm -f "$B"; die "short bundle: $got of $NBUNDLE bytes"; }
  git --git-dir="$M" fetch -q --no-tags --no-write-fetch-head "$B" \
    "+refs/flocks/start:refs/flocks/start/$TASK" >&2 \
    || { rm -f "$B"; die "cannot fetch the start commit from its bundle"; }
  rm -f "$B"
  exit 0 ;;
prepare)
  [ -n "$TASK" ] && [ -n "$BRANCH" ] && [ -n "$START" ] || die "prepare needs task, branch, start"
  # With "salvage yes": what an interrupted attempt left on the task's branch
  # (its leftovers committed) goes back first, instead of being checked out
  # over: "head SHA" and its bundle, and nothing is prepared.
  if [ -n "$SALVAGE" ] && [ -d "$W/.git" ] && cd "$W" 2>/dev/null \
     && [ "$(git symbolic-ref -q HEAD 2>/dev/null)" = "refs/heads/$BRANCH" ]; then
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
      git add -A >&2 && git commit -q --no-verify \
        -m "flocks: uncommitted changes left by an interrupted attempt" >&2 \
        || die "cannot commit the leftovers"
    fi
    head=$(git rev-parse -q --verify "refs/heads/$BRANCH^{commit}") || die "the branch $BRANCH is gone"
    if [ "$head" != "$START" ]; then
      echo "head $head"
      send_bundle
      exit 0
    fi
  fi
  # The start commit must be there (the task's repository has it when a
  # retry starts where the last attempt ended): else "start no" and the
  # tips the mirror has, and nothing is prepared.
  if ! { [ -d "$W/.git" ] && git -C "$W" cat-file -e "$START^{commit}" 2>/dev/null; } \
     && ! git --git-dir="$M" cat-file -e "$START^{commit}" 2>/dev/null; then
    echo "start no"
    git --git-dir="$M" for-each-ref --count=64 --sort=-committerdate \
      --format='have %(objectname)' refs/flocks/start 2>/dev/null
    exit 0
  fi
  # Each task has a repository of its own (its refs are its own: another
  # task's agent moving a branch moves it in its own repository only); the
  # objects sent in are shared through alternates. A worktree of the
  # mirror (what older flocks made) becomes one.
  if [ -f "$W/.git" ]; then
    git --git-dir="$M" worktree remove --force "$W" >/dev/null 2>&1 || rm -rf "$W"
    git --git-dir="$M" worktree prune >&2
  fi
  if [ ! -d "$W/.git" ]; then
    rm -rf "$W"
    git init -q "$W" >&2 || die "cannot create the repository $W"
    printf '%s\n' "$M/objects" >"$W/.git/objects/info/alternates" || die "cannot link $W to $M"
  fi
  cd "$W" || die "cannot enter $W"
  git checkout -q -f -B "$BRANCH" "$START" >&2 || die "cannot check out the task branch"
  git clean -fdq >&2
  echo "worktree $W"
  # The [workspace] setup that completed in this worktree (see mark).
  gd=$(git rev-parse --git-dir 2>/dev/null) && [ -f "$gd/flocks-setup" ] \
    && echo "setup_mark $(head -n 1 "$gd/flocks-setup")"
  exit 0 ;;
include)
  [ -n "$TASK" ] || die "include needs task"
  cd "$W" || die "the worktree $W is gone"
  command -v tar >/dev/null 2>&1 || die "tar is not installed on this host (flocks copies .worktreeinclude's files with it)"
  tar -x -p -f - <&3 >&2 || die "cannot extract .worktreeinclude's files into $W"
  exit 0 ;;
mark)
  [ -n "$TASK" ] && [ -n "$SETUP_HASH" ] || die "mark needs task, setup_hash"
  cd "$W" || die "the worktree $W is gone"
  gd=$(git rev-parse --git-dir) || die "$W is not a worktree"
  printf '%s\n' "$SETUP_HASH" >"$gd/flocks-setup" || die "cannot write $gd/flocks-setup"
  exit 0 ;;
finish)
  [ -n "$TASK" ] && [ -n "$ATTEMPT" ] && [ -n "$BRANCH" ] || die "finish needs task, attempt, branch"
  cd "$W" || die "the worktree $W is gone"
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    git add -A >&2 && git commit -q --no-verify -m "flocks: uncommitted changes left by attempt $ATTEMPT" >&2 \
      || die "cannot commit the leftovers"
    echo "leftovers yes"
  else
    echo "leftovers no"
  fi
  head=$(git rev-parse -q --verify "refs/heads/$BRANCH^{commit}") || die "the branch $BRANCH is gone"
  echo "head $head"
  send_bundle
  exit 0 ;;
salvage)
  # What an attempt interrupted by a crash of flocks left in the worktree:
  # commit its leftovers and say where the task branch is.
  [ -n "$TASK" ] && [ -n "$BRANCH" ] || die "salvage needs task, branch"
  if [ -e "$W/.git" ] && cd "$W" 2>/dev/null \
     && [ "$(git symbolic-ref -q HEAD 2>/dev/null)" = "refs/heads/$BRANCH" ]; then
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
      git add -A >&2 && git commit -q --no-verify \
        -m "flocks: uncommitted changes left by an interrupted attempt" >&2 \
        || die "cannot commit the leftovers"
    fi
    head=$(git rev-parse -q --verify "refs/heads/$BRANCH^{commit}") || die "the branch $BRANCH is gone"
    echo "head $head"
    send_bundle
  else
    echo "head none"
  fi
  exit 0 ;;
pack)
  # Repository upkeep of the mirror, off the agents' path (flocks calls it
  # between waves, beside the other ops). Task repositories borrow the
  # mirror's objects through alternates, some of them no longer reachable
  # from its refs (a start ref replaced by a retry's): nothing is dropped.
  [ -d "$M" ] || { echo "packed_refs 0"; echo "gc no"; echo "loose_objects 0"; echo "packs 0"; exit 0; }
  refs=$(find "$M/refs" -type f 2>/dev/null | wc -l | tr -d ' ')
  in17=$(find "$M/objects/17" -type f -name '??????????????????????????????????????' 2>/dev/null | wc -l | tr -d ' ')
  packs=$(find "$M/objects/pack" -type f -name '*.pack' 2>/dev/null | wc -l | tr -d ' ')
  auto=$(git --git-dir="$M" config --int gc.auto 2>/dev/null) || auto=6700
  limit=$(git --git-dir="$M" config --int gc.autoPackLimit 2>/dev/null) || limit=50
  packed=0
  if [ "$refs" -ge 64 ]; then
    git --git-dir="$M" pack-refs --all >&2 || die "git pack-refs failed in $M"
    packed=$refs
  fi
  gc=no
  if [ "$auto" -gt 0 ] && { [ "$in17" -gt $(( (auto + 255) / 256 )) ] \
       || { [ "$limit" -gt 0 ] && [ "$packs" -gt "$limit" ]; }; }; then
    git --git-dir="$M" repack -a -d -l -k -q >&2 || die "git repack failed in $M"
    # A first repack (no pack yet) leaves the unreachable loose objects
    # loose; the next one packs them.
    left=$(git --git-dir="$M" count-objects 2>/dev/null | cut -d' ' -f1)
    if [ "${left:-0}" -gt 0 ]; then
      git --git-dir="$M" repack -a -d -l -k -q >&2 || die "git repack failed in $M"
    fi
    gc=yes
  fi
  echo "packed_refs $packed"
  echo "gc $gc"
  echo "loose_objects $(( in17 * 256 ))"
  echo "packs $packs"
  exit 0 ;;
release)
  [ -n "$TASK" ] || die "release needs task"
  rm -rf "$W"
  git --git-dir="$M" worktree prune >&2
  exit 0 ;;
run) ;;
*) die "unknown op: $OP" ;;
esac

# --- run -----------------------------------------------------------------
[ -n "$TASK" ] && [ -n "$TAG" ] && [ -n "$HAVE_ARGV" ] || die "run needs task, tag, argv"
case $NBYTES in ''|*[!0-9]*) die "missing prompt length" ;; esac
# Scratch dirs of helpers that died before their cleanup (the host was killed).
for old in "${TMPDIR:-/tmp}"/flocks-helper.*.*; do
  [ -d "$old" ] || continue
  opid=${old##*/flocks-helper.}; opid=${opid%%.*}
  case $opid in ''|*[!0-9]*) continue ;; esac
  kill -0 "$opid" 2>/dev/null || rm -rf "$old"
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/flocks-helper.$$.XXXXXX") || die "mktemp failed"
head -c "$NBYTES" <&3 >"$TMP/prompt"
got=$(wc -c <"$TMP/prompt")
[ "$got" -eq "$NBYTES" ] || { rm -rf "$TMP"; die "short prompt: $got of $NBYTES bytes"; }
cd "$W" || { rm -rf "$TMP"; die "the worktree $W is gone"; }

MARK="FLOCKS_ATTEMPT=$TAG"
tagged_pids() {
  grep -lzxF -- "$MARK" /proc/[0-9]*/environ 2>/dev/null |
    sed -n 's|^/proc/\([0-9]*\)/environ$|\1|p' | grep -vx -- "$$"
}
# $1 = reason, $2 = tenths of a second before KILL
killtree() {
  say "stopping the agent ($1)"
  n=0; sig=TERM
  [ "$2" -eq 0 ] && sig=KILL
  while pids=$(tagged_pids); [ -n "$pids" ]; do
    # shellcheck disable=SC2086
    kill -s $sig $pids 2>/dev/null
    n=$((n + 1))
    [ $n -ge "$2" ] && sig=KILL
    [ $n -ge $(($2 + 100)) ] && { say "giving up, still alive: $pids"; return 1; }
    sleep 0.1
  done
  return 0
}

# The agent: its own session, tagged, env from the header (the values never
# appear on a command line), prompt file on stdin, the ssh channel as stdout/stderr.
(
  for n in $UNSETS; do unset "$n"; done
  while [ $# -gt 0 ]; do
    [ "$1" = "--" ] && { shift; break; }
    export "$1"; shift
  done
  export "$MARK" FLOCKS_HELPER_PID=$$
  exec setsid -w "$@"
) <"$TMP/prompt" 3<&- &
AGENT_PID=$!
set --
trap '' PIPE
say "started pid $AGENT_PID"

date +%s >"$TMP/last"
(
  trap '' PIPE
  while IFS= read -r c; do
    date +%s >"$TMP/last"
    case $c in
      term) killtree "stop request" "$GRACE_DS"; exit 0 ;;
      kill) killtree "kill request" 0; exit 0 ;;
      *) ;;
    esac
  done
  killtree "flocks is gone" "$GRACE_DS"
) <&3 >/dev/null &
WATCHER=$!
exec 3<&-

MONITOR=""
if [ "$HEARTBEAT" -gt 0 ]; then
  (
    trap '' PIPE
    while sleep 1; do
      last=$(cat "$TMP/last" 2>/dev/null) || exit 0
      if [ $(( $(date +%s) - last )) -gt "$HEARTBEAT" ]; then
        killtree "no word from flocks for ${HEARTBEAT}s" "$GRACE_DS"; exit 0
      fi
    done
  ) </dev/null >/dev/null &
  MONITOR=$!
fi

trap 'killtree "the helper got a signal" "$GRACE_DS"; rm -rf "$TMP"; exit 129' HUP INT TERM

wait "$AGENT_PID"
RC=$?
[ -n "$(tagged_pids)" ] && killtree "the agent exited; stopping what it left running" "$GRACE_DS"
kill $WATCHER $MONITOR 2>/dev/null
rm -rf "$TMP"
say "exit rc=$RC"
exit "$RC"
