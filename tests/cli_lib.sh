# cli_lib.sh — the harness every tests/cli_*.sh sources: a temp folder,
# pass/fail counters and expect/contains.  Each script ends with cli_done.
# Usage inside a script:  . "$(dirname "$0")/cli_lib.sh"
set -u
NETC=${NETC:-build/netc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS DESCRIPTION -- command...   (stdout+stderr in $tmp/out)
expect() {
    local want=$1 what=$2; shift 3
    "$@" >"$tmp/out" 2>&1
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else bad "$what: exit $got, want $want"; sed 's/^/    /' "$tmp/out" | head -20; fi
}
contains() {
    if grep -qF -- "$2" "$tmp/out"; then ok; else bad "$1: output lacks \"$2\""; sed 's/^/    /' "$tmp/out" | head -20; fi
}
# cli_done NAME: the summary line and the exit status
cli_done() {
    echo "${1:-cli}: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
