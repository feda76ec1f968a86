#!/usr/bin/env bash
# cli_plan.sh — `netc plan`: the Colin27 dataset planned into a protocol file
# that nets can import, exit codes, and atomic outputs.
# Usage: NETC=build/netc tests/cli_plan.sh
. "$(dirname "$0")/cli_lib.sh"
data=build/data/Dataset001_Colin27BET

expect 0 "plan --help" -- "$NETC" plan --help
contains "plan --help" "usage: netc plan DATA"
expect 2 "plan without DATA" -- "$NETC" plan
contains "plan without DATA" "usage: netc plan"
expect 2 "plan unknown option" -- "$NETC" plan "$data" --frobnicate
contains "plan unknown option" "unknown option \`--frobnicate\`"
expect 2 "plan -o without a value" -- "$NETC" plan "$data" -o
expect 2 "plan bad --budget" -- "$NETC" plan "$data" --budget lots
contains "plan bad --budget" "--budget takes GB"
expect 2 "plan --budget 0" -- "$NETC" plan "$data" --budget 0
expect 2 "plan bad --name" -- "$NETC" plan "$data" --name "net"
expect 2 "plan two folders" -- "$NETC" plan "$data" "$data"
expect 1 "plan missing folder" -- "$NETC" plan "$tmp/no_such_dataset"
contains "plan missing folder" "$tmp/no_such_dataset"

# a failed run leaves an existing -o file alone
echo "keep me" >"$tmp/keep.net"
expect 1 "plan missing folder with -o" -- "$NETC" plan "$tmp/no_such_dataset" -o "$tmp/keep.net"
[ "$(cat "$tmp/keep.net")" = "keep me" ] && ok || bad "a failed plan changed the existing -o file"
mkdir -p "$tmp/bad/imagesTr" "$tmp/bad/labelsTr"
echo '{ "channel_names": {"0": "T1"}, "labels": {"background": 0' >"$tmp/bad/dataset.json"
expect 1 "plan malformed dataset.json" -- "$NETC" plan "$tmp/bad" -o "$tmp/keep.net"
contains "plan malformed dataset.json" "dataset.json"
[ "$(cat "$tmp/keep.net")" = "keep me" ] && ok || bad "a failed plan changed the existing -o file"

if [ -f "$data/dataset.json" ]; then
    expect 0 "plan colin27" -- "$NETC" plan "$data" -o "$tmp/p.net" --json "$tmp/fp.json"
    contains "plan colin27" "colin27_lower"
    contains "plan colin27" "poolings per axis"
    contains "plan colin27" "wrote $tmp/p.net"
    grep -q "^protocol colin27bet_3d {" "$tmp/p.net" && ok || bad "p.net lacks protocol colin27bet_3d"
    grep -q "^protocol colin27bet_2d {" "$tmp/p.net" && ok || bad "p.net lacks protocol colin27bet_2d"
    grep -q '"foreground_intensity_properties_per_channel"' "$tmp/fp.json" && ok || bad "fp.json lacks the intensities"
    ls "$tmp" | grep -q "tmp-" && bad "a temporary file was left behind" || ok
    # the planned file checks when a net imports it
    depth3=$(sed -n 's/.*-D depth=\([0-9]*\).*/\1/p' "$tmp/p.net" | sed -n 1p)
    depth2=$(sed -n 's/.*-D depth=\([0-9]*\).*/\1/p' "$tmp/p.net" | sed -n 2p)
    printf 'import "p.net"\nimport "%s/netdefs/unet3d.net"\n' "$PWD" >"$tmp/use3d.net"
    printf 'import "p.net"\nimport "%s/netdefs/unet2d.net"\n' "$PWD" >"$tmp/use2d.net"
    expect 0 "check the planned 3d protocol" -- "$NETC" check "$tmp/use3d.net" --protocol colin27bet_3d -D depth="$depth3"
    contains "check the planned 3d protocol" "parameters:"
    expect 0 "check the planned 2d protocol" -- "$NETC" check "$tmp/use2d.net" --protocol colin27bet_2d -D depth="$depth2"
    # --name, --budget, and the text on stdout without -o
    expect 0 "plan --name --budget" -- "$NETC" plan "$data" --name brain --budget 4
    contains "plan --name --budget" "protocol brain_3d {"
    contains "plan --name --budget" "280.0"
    # a late failure (the --json file cannot be written) leaves -o alone
    expect 1 "plan --json into a missing folder" -- "$NETC" plan "$data" -o "$tmp/keep.net" --json "$tmp/nope/fp.json"
    contains "plan --json into a missing folder" "$tmp/nope/fp.json"
    [ "$(cat "$tmp/keep.net")" = "keep me" ] && ok || bad "a failed plan changed the existing -o file"
    # -o into a folder that does not exist: exit 1, naming it
    expect 1 "plan -o into a missing folder" -- "$NETC" plan "$data" -o "$tmp/nope/p.net"
    contains "plan -o into a missing folder" "$tmp/nope/p.net"
else
    echo "cli_plan: $data missing (bash scripts/fetch_colin27.sh); skipped the Colin27 checks"
fi

cli_done cli_plan
