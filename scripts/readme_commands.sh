#!/usr/bin/env bash
# Print one of the README's two leading commands, exactly as written there:
#   scripts/readme_commands.sh main    # the first ```bash block: install, then the main job
#   scripts/readme_commands.sh test    # the second ```bash block: install, lint, the test suite
# .ci/run and scripts/fresh-clone-check.sh run what this prints, so they run what a newcomer reads.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  main) block=1 ;;
  test) block=2 ;;
  *) echo "usage: $0 main|test" >&2; exit 2 ;;
esac
command=$(awk -v want="$block" '
  /^```bash$/ { n++; inside = (n == want); next }
  /^```$/ { if (inside) exit; inside = 0; next }
  inside { print }' README.md)
if [ -z "$command" ] || [ "$(printf '%s\n' "$command" | wc -l)" -ne 1 ]; then
  echo "error: README.md's code block $block is not one command: '$command'" >&2
  exit 2
fi
printf '%s\n' "$command"
