#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of the parsers a request or a config file
# reaches. Short runs in CI; long runs by hand:
#   scripts/fuzz.sh                 # every target, 30 s each
#   scripts/fuzz.sh 15              # what the test command (CI) runs
#   scripts/fuzz.sh 3600            # every target, 1 hour each
#   scripts/fuzz.sh 600 jwt_verify  # one target
# The toolchain here is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# A crash leaves its input in fuzz/artifacts/<target>/: turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(config_loader authorization_header introspection_response jwt_verify cert_identity request_target)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t (${seconds}s)"
  [ -d "seeds/$t" ] || { echo "fuzz: seeds/$t is missing" >&2; exit 1; }
  set +e
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -print_final_stats=1 \
    > "corpus/$t.log" 2>&1
  status=$?
  set -e
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|panicked|SUMMARY" "corpus/$t.log" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1 || [ "$status" != 0 ]; then
    tail -40 "corpus/$t.log" >&2
    echo "fuzz: $t failed (exit $status): $(ls "artifacts/$t"/crash-* 2>/dev/null)" >&2
    exit 1
  fi
  grep -q "^stat::number_of_executed_units" "corpus/$t.log" || { echo "fuzz: $t did not run" >&2; exit 1; }
done
echo "== fuzzing done"
