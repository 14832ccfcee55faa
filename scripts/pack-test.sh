#!/usr/bin/env bash
# The packed package, installed and started as a user would, with no Rust toolchain on PATH:
#   1. `npm pack` this package and the linux-x64-gnu platform package (with the binary built in
#      this checkout: npm/linux-x64-gnu's glibc 2.17 build if `npm run build:release-x64` made
#      one, else the host build of `npm run build`);
#   2. a scratch egg 3 app (egg@3, egg-scripts@3) and a scratch egg 4 app (egg@4,
#      @eggjs/scripts@4) install both tarballs from the registry (--prefer-offline), start with
#      `--framework=egg-cluster-rs`, serve a request from the native master, stop;
#      node_modules/egg-cluster-rs must hold no target/;
#      and a scratch egg 4.1 beta ESM app ("type": "module", egg@4.1.2-beta.9,
#      @eggjs/scripts@5.0.2-beta.9) installs them with no flags (the peer range admits egg 4's
#      prereleases) and starts on Node 24 (egg 4.1 needs Node >= 22.18; the default Node of CI
#      is 20: scripts/install-nodes.sh provides 24) with `eggctl start --daemon
#      --framework=egg-cluster-rs`, `egg-cluster-rs status` answers, `eggctl stop`;
#   3. the egg 3 and egg 4 apps reinstall the package without its platform package: the install must
#      succeed with its one line; where the package has the JS fallback (lib/fallback.js in the
#      tarball, or PACK_TEST_FALLBACK=serve) the app must also serve through it, with its warning.
#      PACK_TEST_FALLBACK=install checks the install only.
# Scratch dirs live under ${TMPDIR:-/tmp}/egg-cluster-rs-pack-test (removed first: idempotent;
# kept afterwards for inspection). Every step is bounded by `timeout`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
scratch="${TMPDIR:-/tmp}/egg-cluster-rs-pack-test"
began=$(date +%s)
step() { echo "+ [pack-test $(( $(date +%s) - began ))s] $*"; }
fail() { echo "pack-test: FAIL: $*" >&2; exit 1; }

# --- a PATH with no cargo and no rustc: what a user's server or the node Docker image has
bare_path=
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if [ -e "$d/cargo" ] || [ -e "$d/rustc" ]; then continue; fi
  bare_path="${bare_path:+$bare_path:}$d"
done
if PATH="$bare_path" command -v cargo >/dev/null 2>&1; then fail "cargo is still on the bare PATH"; fi

# On a failure, the processes this script started (found by their title, which holds this
# shell's pid) are killed by pid.
titles=()
cleanup() {
  local t pid
  for t in "${titles[@]}"; do
    for pid in $(pgrep -f -- "\"title\":\"$t\"" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  done
}
trap cleanup EXIT

rm -rf "$scratch"
mkdir -p "$scratch/pkg"

# --- 1. the tarballs
binary="$repo/npm/linux-x64-gnu/egg-cluster-rs.linux-x64-gnu.node"
[ -f "$binary" ] || binary="$repo/egg-cluster-rs.linux-x64-gnu.node"
[ -f "$binary" ] || fail "no linux-x64-gnu binary: run \`npm run build\` (or \`npm run build:release-x64\`) first"
step "packing the package and egg-cluster-rs-linux-x64-gnu (binary: ${binary#"$repo"/})"
main_tgz="$scratch/$(cd "$repo" && npm pack --silent --pack-destination "$scratch" | tail -1)"
mkdir -p "$scratch/pkg/linux-x64-gnu"
cp "$repo/npm/linux-x64-gnu/package.json" "$repo/npm/linux-x64-gnu/README.md" "$scratch/pkg/linux-x64-gnu/"
cp "$binary" "$scratch/pkg/linux-x64-gnu/egg-cluster-rs.linux-x64-gnu.node"
plat_tgz="$scratch/$(cd "$scratch/pkg/linux-x64-gnu" && npm pack --silent --pack-destination "$scratch" | tail -1)"
echo "  $(basename "$main_tgz"): $(du -k "$main_tgz" | cut -f1) KiB; $(basename "$plat_tgz"): $(du -k "$plat_tgz" | cut -f1) KiB"
# (listings held in variables: `tar | grep -q` under pipefail fails on tar's SIGPIPE)
listing=$(tar tzf "$main_tgz")
unwanted=$(grep -E '^package/(target|__test__|bench|node_modules)/|\.node$' <<< "$listing" || true)
[ -z "$unwanted" ] || fail "the tarball holds build output, tests or a binary: $(head -3 <<< "$unwanted")"
fallback_mode=${PACK_TEST_FALLBACK:-}
if [ -z "$fallback_mode" ]; then
  if grep -qx 'package/lib/fallback.js' <<< "$listing"; then fallback_mode=serve; else fallback_mode=install; fi
fi

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# make_app <dir> <egg spec> <scripts package@spec> [esm]
make_app() {
  local dir=$1 egg=$2 scripts=$3 esm=${4:-} type=
  [ -z "$esm" ] || type=' "type": "module",'
  mkdir -p "$dir/app" "$dir/config"
  cat > "$dir/package.json" <<EOF
{ "name": "$(basename "$dir")", "private": true,$type
  "dependencies": { "egg": "$egg", "${scripts%@*}": "${scripts##*@}" } }
EOF
  if [ -n "$esm" ]; then
    echo "export default { keys: 'pack-test' };" > "$dir/config/config.default.js"
    echo "export default app => { app.router.get('/', ctx => { ctx.body = 'hi, egg'; }); };" > "$dir/app/router.js"
  else
    echo "exports.keys = 'pack-test';" > "$dir/config/config.default.js"
    echo "module.exports = app => { app.router.get('/', ctx => { ctx.body = 'hi, egg'; }); };" > "$dir/app/router.js"
  fi
}

# npm_install <dir> <log> <args...>: with no cargo on PATH, the install scripts' lines shown
npm_install() {
  local dir=$1 log=$2; shift 2
  (cd "$dir" && PATH="$bare_path" timeout 300 npm install --prefer-offline --no-audit --no-fund \
    --foreground-scripts "$@" > "$log" 2>&1) || { tail -30 "$log" >&2; fail "npm install in $dir failed (log: $log)"; }
}

# serve <dir> <start bin> <native|fallback> [a node's bin dir, put first on PATH]
serve() {
  local dir=$1 bin=$2 mode=$3
  local bare_path=${4:+$4:}$bare_path
  local port title out err st
  port=$(free_port)
  title="egg-cluster-rs-pack-test-$$-$(basename "$dir")-$mode"
  titles+=("$title")
  out="$dir/logs/master-stdout.log"; err="$dir/logs/master-stderr.log"
  rm -rf "$dir/logs"; mkdir -p "$dir/logs"
  step "$(basename "$dir") ($mode): $(basename "$bin") start --daemon --framework=egg-cluster-rs on port $port"
  (cd "$dir" && PATH="$bare_path" HOME="$dir" timeout 150 node "$bin" start --daemon --framework=egg-cluster-rs \
    --title="$title" --port="$port" --workers=1 --stdout="$out" --stderr="$err" "$dir" > "$dir/logs/start.log" 2>&1) \
    || { cat "$dir/logs/start.log" "$out" "$err" >&2 2>/dev/null; fail "$(basename "$dir") ($mode) did not start"; }
  local body
  body=$(curl -fsS --max-time 10 "http://127.0.0.1:$port/") || fail "$(basename "$dir") ($mode): no answer on port $port"
  [ "$body" = "hi, egg" ] || fail "$(basename "$dir") ($mode): answered '$body'"
  # "[master] egg-cluster-rs started on" proves nothing: the JS master names the framework too.
  # The status command answers only from the native master.
  local status
  status=$(cd "$dir" && PATH="$bare_path" timeout 30 node node_modules/egg-cluster-rs/bin/egg-cluster-rs.js status --title="$title" --json 2>&1) && st=0 || st=$?
  if [ "$mode" = native ]; then
    [ "$st" = 0 ] && grep -q '"workers"' <<< "$status" || { echo "$status" >&2; fail "$(basename "$dir"): egg-cluster-rs status does not answer: the master is not the native one"; }
    if grep -q 'WARN .*\[egg-cluster-rs\]' "$out" "$err"; then fail "$(basename "$dir"): a fallback warning with the binary installed"; fi
  else
    [ "$st" != 0 ] || { echo "$status" >&2; fail "$(basename "$dir"): the native master answered status without its binary"; }
    grep -q 'WARN .*\[egg-cluster-rs\]' "$out" "$err" || { cat "$out" "$err" >&2; fail "$(basename "$dir"): no fallback warning in the master's logs"; }
    echo "  $(grep -h 'WARN .*\[egg-cluster-rs\]' "$out" "$err" | head -1 | cut -c1-200)"
  fi
  (cd "$dir" && PATH="$bare_path" HOME="$dir" timeout 60 node "$bin" stop --title="$title" > "$dir/logs/stop.log" 2>&1) \
    || { cat "$dir/logs/stop.log" >&2; fail "$(basename "$dir") ($mode): stop failed"; }
  local i
  for i in $(seq 100); do
    pgrep -f -- "\"title\":\"$title\"" >/dev/null || break
    sleep 0.1
  done
  if pgrep -f -- "\"title\":\"$title\"" >/dev/null; then fail "$(basename "$dir") ($mode): processes left after stop"; fi
  echo "  served 'hi, egg' on :$port, stopped"
}

# install_native <name> <egg> <scripts> [esm]: the app with both tarballs (no cargo on PATH)
install_native() {
  local name=$1 egg=$2 scripts=$3
  local dir="$scratch/$name"
  make_app "$dir" "$egg" "$scripts" "${4:-}"
  npm_install "$dir" "$dir/install-native.log" "$main_tgz" "$plat_tgz"
}

# check_install <name>: the install found the prebuilt binary and built nothing into the package
check_install() {
  local name=$1
  local dir="$scratch/$name"
  grep -q 'egg-cluster-rs: native master ready (linux-x64-gnu)' "$dir/install-native.log" \
    || { cat "$dir/install-native.log" >&2; fail "$name: the install did not find the prebuilt binary"; }
  local pkg="$dir/node_modules/egg-cluster-rs"
  [ ! -e "$pkg/target" ] || fail "$name: node_modules/egg-cluster-rs/target exists"
  [ -z "$(find "$pkg" -maxdepth 1 -name '*.node' -print -quit)" ] || fail "$name: a .node file in node_modules/egg-cluster-rs"
  echo "  node_modules/egg-cluster-rs: $(du -sk --exclude=node_modules "$pkg" | cut -f1) KiB (without its nested node_modules), egg-cluster-rs-linux-x64-gnu: $(du -sk "$dir/node_modules/egg-cluster-rs-linux-x64-gnu" | cut -f1) KiB, the app's whole node_modules: $(du -sk "$dir/node_modules" | cut -f1) KiB"
}

run_app() {
  local name=$1 bin=$2
  local dir="$scratch/$name"
  local pkg="$dir/node_modules/egg-cluster-rs"
  check_install "$name"
  serve "$dir" "$dir/node_modules/$bin" native

  step "$name: reinstall without the platform package"
  (cd "$dir" && PATH="$bare_path" timeout 120 npm uninstall --no-audit --no-fund egg-cluster-rs egg-cluster-rs-linux-x64-gnu > "$dir/uninstall.log" 2>&1) \
    || { tail -20 "$dir/uninstall.log" >&2; fail "$name: npm uninstall failed"; }
  # --omit=optional: once the platform packages are published, the registry would supply it
  npm_install "$dir" "$dir/install-fallback.log" --omit=optional "$main_tgz"
  grep -q 'egg-cluster-rs: no prebuilt binary for linux-x64-gnu and no cargo on PATH' "$dir/install-fallback.log" \
    || { cat "$dir/install-fallback.log" >&2; fail "$name: the install without a binary did not say so"; }
  [ ! -e "$dir/node_modules/egg-cluster-rs-linux-x64-gnu" ] || fail "$name: the platform package is still installed"
  [ ! -e "$pkg/target" ] || fail "$name: node_modules/egg-cluster-rs/target exists"
  if [ "$fallback_mode" = serve ]; then
    serve "$dir" "$dir/node_modules/$bin" fallback
  else
    echo "  install without a binary: ok; the fallback serve check is off (no lib/fallback.js in the package; PACK_TEST_FALLBACK=serve turns it on)"
  fi
}

# egg 4.1 needs Node >= 22.18: its app starts on Node 24 (installed before the installs begin)
node24_dir=$(dirname "$("$repo/scripts/install-nodes.sh" 24)")

# the apps' installs in parallel: most of their time is the registry and the disk
step "npm install in egg3-app (egg@^3, egg-scripts@^3), egg4-app (egg@^4, @eggjs/scripts@^4) and egg41-esm-app (egg@4.1.2-beta.9, @eggjs/scripts@5.0.2-beta.9, ESM), with both tarballs, no flags, no cargo on PATH"
install_native egg3-app '^3' 'egg-scripts@^3' & egg3=$!
install_native egg4-app '^4' '@eggjs/scripts@^4' & egg4=$!
install_native egg41-esm-app '4.1.2-beta.9' '@eggjs/scripts@5.0.2-beta.9' esm & egg41=$!
wait "$egg3" || fail "egg3-app: install failed"
wait "$egg4" || fail "egg4-app: install failed"
wait "$egg41" || fail "egg41-esm-app: install failed (an egg 4 prerelease outside the peer range?)"
run_app egg3-app egg-scripts/bin/egg-scripts.js
run_app egg4-app @eggjs/scripts/bin/run.js
# the native master only (without its binary an egg 4.1 app runs @eggjs/cluster 4's own master)
check_install egg41-esm-app
serve "$scratch/egg41-esm-app" "$scratch/egg41-esm-app/node_modules/@eggjs/scripts/bin/run.js" native "$node24_dir"
step "done in $(( $(date +%s) - began ))s"
