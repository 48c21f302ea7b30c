#!/usr/bin/env bash
# README's two commands work as written, as root and as a normal user: they carry no sudo,
# and scripts/install-deps.sh asks for privileges only to install missing packages — as root
# it calls apt-get directly, as a user it goes through sudo, and without sudo it says what to
# run as root. dpkg-query, apt-get and sudo are stand-ins here (first in PATH), so nothing
# is installed.
# Usage: scripts_no_sudo.sh <path to loco> <source dir>
set -euo pipefail
SRC=$(realpath "$2")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# ---------------------------------------------------------------- README
readme_cmds=$(awk '/^```bash/{f=1; next} /^```/{if (f) exit} f' "$SRC/README.md")
echo "README's first commands:"
echo "$readme_cmds"
grep -q '^scripts/quickstart.sh' <<<"$readme_cmds" || fail "README does not start with scripts/quickstart.sh"
grep -q '^scripts/test.sh' <<<"$readme_cmds" || fail "README does not show scripts/test.sh"
grep -q 'sudo' <<<"$readme_cmds" && fail "README's commands use sudo (a fresh Debian container has none)"
for s in quickstart.sh test.sh build.sh; do
  grep -q '^[^#]*sudo' "$SRC/scripts/$s" && fail "scripts/$s calls sudo itself"
done

# ---------------------------------------------------------------- install-deps.sh
# Stand-ins: dpkg-query reports every package installed except those in $MISSING; apt-get
# and sudo record how they were called.
mkdir -p "$T/bin" "$T/bin-nosudo"
cat >"$T/bin/dpkg-query" <<'SH'
#!/usr/bin/env bash
pkg=${!#}
for m in $MISSING; do [[ $m == "$pkg" ]] && exit 1; done
printf 'install ok installed'
SH
cat >"$T/bin/apt-get" <<'SH'
#!/usr/bin/env bash
echo "apt-get uid=$(id -u) $*" >>"$CALLS"
SH
cat >"$T/bin/sudo" <<'SH'
#!/usr/bin/env bash
echo "sudo uid=$(id -u) $*" >>"$CALLS"
SH
cp "$T/bin/dpkg-query" "$T/bin/apt-get" "$T/bin-nosudo/"
chmod 755 "$T"/bin/* "$T"/bin-nosudo/*
run_deps() {  # run_deps NAME USER BIN MISSING: runs install-deps.sh, sets $rc
  local name=$1 user=$2 bin=$3 missing=$4
  : >"$T/$name.calls"
  chmod 666 "$T/$name.calls"
  local env=(env "PATH=$bin:/usr/bin:/bin" "MISSING=$missing" "CALLS=$T/$name.calls")
  rc=0
  if [[ $user == root ]]; then
    "${env[@]}" bash "$SRC/scripts/install-deps.sh" >"$T/$name.out" 2>&1 || rc=$?
  else
    runuser -u "$user" -- "${env[@]}" bash "$SRC/scripts/install-deps.sh" >"$T/$name.out" 2>&1 || rc=$?
  fi
  echo "$name: exit $rc; calls: $(tr '\n' ';' <"$T/$name.calls")"
}
if [[ $(id -u) -eq 0 ]]; then
  run_deps root-none root "$T/bin" ""
  [[ $rc -eq 0 && ! -s $T/root-none.calls ]] || fail "root, nothing missing: exit $rc, calls $(cat "$T/root-none.calls")"
  run_deps root-missing root "$T/bin" "catch2"
  [[ $rc -eq 0 ]] || fail "root, catch2 missing: exit $rc"
  grep -q "^apt-get uid=0 install .*catch2" "$T/root-missing.calls" || fail "root: apt-get not called directly"
  grep -q "^sudo" "$T/root-missing.calls" && fail "root: sudo was called"
  if id nobody >/dev/null 2>&1 && command -v runuser >/dev/null; then
    run_deps user-none nobody "$T/bin" ""
    [[ $rc -eq 0 && ! -s $T/user-none.calls ]] || fail "user, nothing missing: exit $rc, calls $(cat "$T/user-none.calls")"
    run_deps user-missing nobody "$T/bin" "catch2"
    [[ $rc -eq 0 ]] || fail "user, catch2 missing: exit $rc"
    grep -q "^sudo uid=[1-9][0-9]* .*apt-get .*install .*catch2" "$T/user-missing.calls" ||
      fail "user: the install did not go through sudo"
    run_deps user-nosudo nobody "$T/bin-nosudo" "catch2"
    [[ $rc -eq 1 ]] || fail "user without sudo: exit $rc (want 1)"
    grep -q "sudo is not available; as root run:" "$T/user-nosudo.out" ||
      { fail "user without sudo: no instructions"; cat "$T/user-nosudo.out"; }
  else
    echo "no 'nobody' user or runuser: the normal-user cases are skipped"
  fi
else
  run_deps user-none "$(id -un)" "$T/bin" ""
  [[ $rc -eq 0 && ! -s $T/user-none.calls ]] || fail "nothing missing: exit $rc"
  echo "not root: the root and other-user cases are skipped"
fi

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "scripts_no_sudo: all checks passed"
