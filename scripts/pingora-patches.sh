#!/usr/bin/env bash
# Materialises the patched Pingora crates that Cargo.toml's [patch.crates-io] points at:
# each crate named in patches/pristine.sha256 is fetched from crates.io exactly as published
# (through a throw-away manifest, so the workspace's own patch table plays no part), checked
# against the checksum recorded there (the one Cargo.lock had for it before it was patched),
# unpacked into patches/applied-by-setup.sh/<crate>/ (git-ignored) and patched with
# patches/<crate>/*.patch in order. A rejected hunk fails the run. Re-running is cheap: the
# folder is rebuilt only when a patch or a checksum changed. scripts/setup.sh runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=patches/applied-by-setup.sh
list=patches/pristine.sha256
for tool in cargo patch sha256sum tar; do
  command -v "$tool" >/dev/null || { echo "pingora-patches: $tool is required" >&2; exit 1; }
done
stamp=$(cat "$list" patches/*/*.patch "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# 1. fetch the pristine crates with a manifest that has no patch table
mkdir -p "$work/fetch/src"
: > "$work/fetch/src/lib.rs"
{
  printf '[package]\nname = "gatehouse-pristine-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[workspace]\n\n[dependencies]\n'
  while read -r _ file; do
    crate=${file%.crate}; name=${crate%-*}; version=${crate##*-}
    printf '%s = { version = "=%s", default-features = false }\n' "$name" "$version"
  done < "$list"
} > "$work/fetch/Cargo.toml"
cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"
cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
mkdir -p "$work/out"
while read -r sum file; do
  crate=${file%.crate}; name=${crate%-*}
  src=$(find "$cache" -name "$file" -print -quit)
  [ -n "$src" ] || { echo "pingora-patches: $file not in $cache after cargo fetch" >&2; exit 1; }
  # 2. exactly the published bytes
  echo "$sum  $src" | sha256sum --check --quiet - \
    || { echo "pingora-patches: $file does not match its checksum in $list" >&2; exit 1; }
  tar -xzf "$src" -C "$work/out"
  mv "$work/out/$crate" "$work/out/$name"
  # 3. Gatehouse's diffs, in order; any rejected hunk is an error
  for p in "patches/$name"/*.patch; do
    [ -e "$p" ] || continue
    if ! patch -d "$work/out/$name" -p1 --forward --batch --no-backup-if-mismatch --reject-file=- --silent < "$root/$p"; then
      echo "pingora-patches: $p does not apply to $crate" >&2
      exit 1
    fi
  done
done < "$list"
rm -rf "$out"
mkdir -p "$out"
mv "$work/out/"* "$out/"
echo "$stamp" > "$out/.stamp"
echo "pingora-patches: applied $(ls patches/*/*.patch | wc -l) patch(es) into $out" >&2
