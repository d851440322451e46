#!/usr/bin/env bash
# Builds every fuzz target of fuzz/ (cargo fuzz, nightly) once, then runs
# each for SECONDS (default 60) and prints, per target, the executions, the
# corpus size and whether it crashed. Exits non-zero when a target crashed
# (its input is in fuzz/artifacts/<target>/; make it a regression test).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Corpora persist in fuzz/corpus/<target>/ (ignored by git), seeded from the
# crates' own encoders on the first run (see fuzz/src/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

secs="${1:-60}"
shift || true
# The same flags for build and run: `cargo fuzz run` then rebuilds nothing.
# No sanitizer by default (the decoders are safe Rust; debug assertions and
# overflow checks stay on): an AddressSanitizer build of DataFusion does not
# fit the CI machine's time and disk. FUZZ_SANITIZER=address for one.
flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --codegen-units 16)
# No debug info (cargo fuzz asks for line tables; this flag comes after).
export RUSTFLAGS="${RUSTFLAGS:-} -Cdebuginfo=0"
# The nightly toolchain and cargo-fuzz, installed if missing (idempotent).
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "== fuzz: building ${#targets[@]} targets"
cargo +nightly fuzz build "${flags[@]}"

mkdir -p logs
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz: $t for ${secs}s"
    log="logs/$t.log"
    rc=0
    # -timeout: one input may take at most 10 s; -rss_limit_mb: 2 GiB.
    cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048 -close_fd_mask=1 >"$log" 2>&1 || rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        status=1
        verdict="CRASH (exit $rc; see fuzz/$log and fuzz/artifacts/$t/)"
        tail -40 "$log"
    else
        verdict="no crash"
    fi
    line=$(printf '%-16s %12s execs %7s inputs in corpus  %s' "$t" "${execs:-?}" "$corpus" "$verdict")
    echo "$line"
    summary+=("$line")
done
echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$status"
