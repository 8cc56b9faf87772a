"""The host side of a code sync: two POSIX sh scripts, each run in one `host.exec`.

`probe` reports what a sync needs to know of a host: its tools (git, base64), the commits its
mirror holds (tips of ``refs/ops/commits/*`` in ``<ops_home>/mirror.git``) and the trees under
``<ops_home>/code/``. `apply` makes ``code/<sha>``: it fetches an uploaded bundle into the mirror
(or unpacks a tar.gz when the host has no git), builds the tree in a staging dir and renames it
into place, so a half-built tree is never visible. When the host lacks what the caller assumed
(a bundle prerequisite, the commit, git, base64) `apply` answers "stale" with the probe's
report instead of failing, so an optimistic first attempt costs no extra round trip to correct.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from ops.errors import HostError
from ops.hosts.base import ExecResult, Host

SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
INLINE_MAX_BYTES = 64 << 10  # uploads up to this size ride on the apply exec's stdin (base64)

# a sh function, argv-free: reads $home; the report's format is parsed by `_state`
_REPORT = r"""
report() {
  have=have
  for tool in git base64; do
    if command -v "$tool" >/dev/null 2>&1; then have="$have $tool"; fi
  done
  echo "$have"
  if [ -d "$home/mirror.git" ] && command -v git >/dev/null 2>&1; then
    git --git-dir="$home/mirror.git" for-each-ref --sort=-committerdate --count=500 \
      --format='tip %(objectname)' refs/ops/commits/
  fi
  for tree in "$home"/code/*; do
    if [ -d "$tree" ]; then echo "tree ${tree##*/}"; fi
  done
}
"""

PROBE_SCRIPT = _REPORT + r"""
home=$1
echo state
report
"""

# argv: home sha mode upload base. mode: bundle (unbundle the upload into the mirror first),
# mirror (the mirror should have the commit) or tar (no git: the upload is a tar.gz of the
# tree); upload "-" means base64 on stdin (piped straight in, never a file). With a base, a
# copy of code/<base> hard-linked into the new tree (the clean spare the last sync left, else
# one made and cleaned now of whatever runs added) is made the commit's by git, which rewrites
# the paths that differ between the commits or whose stat data differs from code/.index-<base>
# (the index kept for each tree: a run that changed a file of its tree does not leak the
# change); else `git archive | tar -x`. Files are made read-only: trees share unchanged files
# by hard links. The tree is built in a stage dir and renamed into place whole. After
# answering, a background job makes a clean spare copy of the new tree (.clean-<sha>) for the
# next sync based on it, and tidies up. The common path starts as few processes as it can:
# each costs milliseconds on a busy pod.
APPLY_SCRIPT = _REPORT + r"""
set -eu
KEEP_SPARES=3
home=$1 sha=$2 mode=$3 upload=$4 base=$5
m=$home/mirror.git
code=$home/code
stage=
built=
trap 'if [ -n "$stage" ] && [ -z "$built" ]; then rm -rf "$stage"; fi
      case $upload in -|"") ;; *) rm -f "$upload" ;; esac' EXIT
trap 'exit 1' HUP INT TERM
stale() { echo stale; report; exit 0; }
if [ -d "$code/$sha" ]; then echo present; exit 0; fi
[ "$mode" = tar ] || command -v git >/dev/null 2>&1 || stale
[ "$upload" != - ] || command -v base64 >/dev/null 2>&1 || stale
[ -d "$code" ] || mkdir -p "$code"
stage=$code/.stage.$$  # this shell's own (a dead one's of the same pid is removed)
if [ -e "$stage" ]; then rm -rf "$stage"; fi
mkdir "$stage"
payload() {  # the upload's bytes, to a command that reads them from a file name
  if [ "$upload" = - ]; then base64 -d | "$@" /dev/stdin; else "$@" "$upload"; fi
}
full() {
  mkdir "$stage/$sha"
  { git --git-dir="$m" archive --format=tar "$sha" || touch "$stage/failed"; } |
    tar -xf - -C "$stage/$sha"
  [ ! -e "$stage/failed" ]
}
in_tree() {  # git on the staged tree, with its own index (its stat data tells what changed)
  GIT_DIR="$m" GIT_WORK_TREE="$stage/$sha" GIT_INDEX_FILE="$stage/index" \
    git -C "$stage/$sha" -c core.trustctime=false "$@"
}
from_base() {  # the clean spare of code/$base the last sync left, else a copy cleaned now
  [ -n "$base" ] && [ -d "$code/$base" ] && [ -f "$code/.index-$base" ] || return 1
  cp -p "$code/.index-$base" "$stage/index" || return 1  # -p: marks racily clean entries
  if ! mv "$code/.clean-$base" "$stage/$sha" 2>/dev/null; then
    cp -al "$code/$base" "$stage/$sha" && in_tree clean -ffdxq || return 1
  fi
  in_tree read-tree --reset -u "$sha"
}
spare() {  # in the background: the next sync's clean copy of this tree, and some tidying up
  exec </dev/null >/dev/null 2>&1
  set +e  # best effort: a failure only costs the next sync the copy
  rm -rf "$stage"
  cd "$code" || exit 0
  stage=$(mktemp -d "$code/.spare-tmp.XXXXXX") || exit 0  # absolute: in_tree runs git -C
  cp -p ".index-$sha" "$stage/index" && cp -al "$sha" "$stage/$sha" &&
    in_tree clean -ffdxq && mv "$stage/$sha" "$stage/.clean-$sha" && mv "$stage/.clean-$sha" .
  rm -rf "$stage"
  ls -dt .clean-[0-9a-f]* | tail -n +$((KEEP_SPARES + 1)) | xargs rm -rf  # hex names only
  for index in .index-*; do
    if [ ! -d "${index#.index-}" ]; then rm -f "$index"; fi
  done
  find . -maxdepth 1 \( -name '.stage.*' -o -name '.spare*' -o -name '.clean-*' \) \
    -mmin +1440 -exec rm -rf {} +
}
if [ "$mode" = tar ]; then
  mkdir "$stage/$sha"
  payload tar -C "$stage/$sha" -xzf
else
  if [ ! -d "$m" ]; then  # made aside and renamed in, so concurrent syncs agree on one
    git init -q --bare "$stage/mirror.git"
    mv "$stage/mirror.git" "$home/" 2>/dev/null || [ -d "$m" ]
  fi
  if [ "$mode" = bundle ]; then  # its objects; fails when a prerequisite is missing
    payload git --git-dir="$m" bundle unbundle >/dev/null 2>&1 || true
  fi
  # refused unless the commit is there now: git writes no ref to a missing object
  git --git-dir="$m" update-ref "refs/ops/commits/$sha" "$sha" 2>/dev/null || stale
  if from_base; then
    echo "reused $base"
  else
    rm -rf "$stage/$sha" "$stage/index"
    full
    in_tree read-tree "$sha" && in_tree update-index -q --refresh >/dev/null || true
  fi
fi
find "$stage/$sha" -type f -perm /222 -exec chmod a-w {} +
if mv "$stage/$sha" "$code/" 2>/dev/null; then
  if [ -f "$stage/index" ]; then mv "$stage/index" "$code/.index-$sha"; fi
  if [ "$mode" != tar ]; then built=1; fi  # the background job removes the stage
else
  [ -d "$code/$sha" ]
fi
echo done
if [ -n "$built" ]; then spare & fi
"""


@runtime_checkable
class SyncHost(Host, Protocol):
    """What a sync needs of a host: exec, `~` expansion and an atomic file upload."""

    def expand(self, path: str) -> str: ...

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None: ...


class HostState(NamedTuple):
    git: bool
    base64: bool
    tips: list[str]  # commits the mirror holds, with their history
    trees: list[str]  # commits with a tree under code/


class Applied(NamedTuple):
    outcome: Literal["done", "present", "stale"]
    reused: str | None = None  # the base whose tree was hard-linked
    state: HostState | None = None  # with "stale": what the host has
    bytes_sent: int = 0  # the payload as it went: raw over SFTP, base64 on stdin


def probe(host: SyncHost, home: str) -> HostState:
    """One round trip: the host's tools, mirror tips and trees."""
    result = host.exec(["sh", "-c", PROBE_SCRIPT, "ops-sync-probe", home])
    lines = result.stdout.splitlines()
    if lines[:1] != ["state"]:
        raise _unexpected(host, result)
    return _state(host, result, lines[1:])


def apply(host: SyncHost, home: str, commit: str, mode: str, *, payload: bytes | None = None,
          inline: bool = True, base: str | None = None) -> Applied:
    """Make code/<commit> from the payload (a bundle, a tar.gz, or nothing for "mirror")."""
    path, stdin = "", None
    if payload is not None and inline and len(payload) <= INLINE_MAX_BYTES:
        import base64  # here, not at the top: a warm submit never gets here (issue 14)

        path, stdin = "-", base64.b64encode(payload).decode()
    elif payload is not None:
        import secrets

        path = f"{home}/uploads/sync-{secrets.token_hex(8)}"
        host.write_file(path, payload, 0o600)
    result = host.exec(["sh", "-c", APPLY_SCRIPT, "ops-sync", home, commit, mode, path,
                        base or ""], input_text=stdin)
    sent = len(stdin) if stdin is not None else len(payload or b"")
    lines = result.stdout.splitlines()
    if lines[:1] == ["present"]:
        return Applied("present", bytes_sent=sent)
    if lines[:1] == ["stale"]:
        return Applied("stale", state=_state(host, result, lines[1:]), bytes_sent=sent)
    if not lines or lines[-1] != "done":
        raise _unexpected(host, result)
    reused = base if base and f"reused {base}" in lines else None
    return Applied("done", reused=reused, bytes_sent=sent)


def _state(host: SyncHost, result: ExecResult, lines: list[str]) -> HostState:
    have = lines[0].split() if lines else []
    if have[:1] != ["have"]:
        raise _unexpected(host, result)
    pairs = [line.split(" ", 1) for line in lines[1:] if " " in line]
    return HostState("git" in have, "base64" in have,
                     [v for k, v in pairs if k == "tip" and SHA.fullmatch(v)],
                     [v for k, v in pairs if k == "tree" and SHA.fullmatch(v)])


def _unexpected(host: SyncHost, result: ExecResult) -> HostError:
    return HostError(f"unexpected answer from the code sync on {host.name}",
                     details=(result.stdout + result.stderr).strip().splitlines()[-5:])
