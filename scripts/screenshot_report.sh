#!/usr/bin/env bash
# Render an HTML report in headless Chromium and save a PNG screenshot (to check it renders).
#   usage: scripts/screenshot_report.sh REPORT.html [OUT.png] [WIDTH,HEIGHT]
#   default OUT: REPORT.png beside the report; default size 1400,2400
#   Chromium: `apt-get install -y chromium` (Debian) or set CHROMIUM=/path/to/chrome.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 REPORT.html [OUT.png] [WIDTH,HEIGHT]" >&2
  exit 2
fi
report=$(realpath "$1")
out=$(realpath -m "${2:-${report%.*}.png}")
size=${3:-1400,2400}
[ -f "$report" ] || { echo "error: $report not found (make one with: bench report RESULTS.csv -o r.html)" >&2; exit 2; }
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
[ -n "$browser" ] || { echo "error: no chromium found; install it (apt-get install -y chromium) or set CHROMIUM" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# A throwaway profile and no network: the report is self-contained and must render offline.
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" --window-size="$size" \
  --screenshot="$out" "file://$report" 2>/dev/null
[ -s "$out" ] || { echo "error: chromium wrote no screenshot to $out" >&2; exit 1; }
echo "screenshot -> $out"
