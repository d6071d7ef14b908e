#!/usr/bin/env bash
# Both README commands as a newcomer meets them: a fresh clone of this repository's HEAD in a temporary
# folder, no .venv, and an empty data cache (FLWR_PRIVKIT_CACHE_DIR points into the temporary folder, so a
# warm ~/.cache/flwr-privkit cannot hide a first-run cost). Prints each command's wall time and the load
# average before and after it, and a summary at the end.
#
#   scripts/fresh-clone-check.sh             # main command, then test command
#   scripts/fresh-clone-check.sh --twice     # and the main command a second time (warm data cache)
#   KEEP=1 scripts/fresh-clone-check.sh      # keep the temporary folder (its path is printed)
set -uo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
twice=0
[ "${1:-}" = "--twice" ] && twice=1
work=$(mktemp -d -t flwr-privkit-fresh-XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/flwr-privkit" || exit 1
cd "$work/flwr-privkit" || exit 1
export FLWR_PRIVKIT_CACHE_DIR="$work/data-cache" FLWR_TELEMETRY_ENABLED=0
echo "fresh clone of $(git log -1 --format='%h %s' | cut -c1-90) in $work ($(nproc) cores)"
summary=()
failed=0
run() {
  local label=$1 name=$2 command start load status
  command=$(bash scripts/readme_commands.sh "$name")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "== $label: $command   (load average before: $load)"
  start=$(date +%s)
  bash -c "set -euo pipefail; $command" > "$work/$label.log" 2>&1
  status=$?
  local took=$(( $(date +%s) - start ))
  tail -n 25 "$work/$label.log"
  local line
  line=$(printf '%-22s exit %d  %4d s (%dm%02ds)  load average before %s, after %s' "$label" "$status" \
         "$took" $((took / 60)) $((took % 60)) "$load" "$(cut -d' ' -f1-3 /proc/loadavg)")
  echo "== $line"
  summary+=("$line")
  [ "$status" -eq 0 ] || failed=1
}
run "main (first run)" main
run "tests" test
[ "$twice" -eq 1 ] && run "main (second run)" main
echo
echo "summary ($(git log -1 --format=%h), $(nproc) cores):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
