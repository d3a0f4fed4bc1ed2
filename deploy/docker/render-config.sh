#!/bin/sh
# livefuse-render-config TEMPLATE OUT: writes the YAML file TEMPLATE to OUT
# (mode 0600) with every ${LIVEFUSE_NAME} placeholder replaced by that
# environment variable's value as a double-quoted YAML string.
#
# It keeps secrets out of config maps and compose files: the template holds
# the placeholders, the orchestrator's secret store the values, and the
# rendered file lives on a memory volume. A placeholder stands for a whole
# scalar (api_token: ${LIVEFUSE_API_TOKEN}, quoted or not). A placeholder
# whose variable is unset or empty, or a value with a control character,
# fails the render; values are never printed.
set -eu
[ $# -eq 2 ] || { echo "usage: livefuse-render-config TEMPLATE OUT" >&2; exit 2; }
umask 077
tmp="$2.tmp.$$"
trap 'rm -f "$tmp"' EXIT
awk '
BEGIN { for (c = 1; c < 32; c++) ctl = ctl sprintf("%c", c); ctl = ctl sprintf("%c", 127) }
{
  line = $0; out = ""
  while (match(line, /\047\$\{LIVEFUSE_[A-Z0-9_]+\}\047|"\$\{LIVEFUSE_[A-Z0-9_]+\}"|\$\{LIVEFUSE_[A-Z0-9_]+\}/)) {
    tok = substr(line, RSTART, RLENGTH)
    if (substr(tok, 1, 1) != "$") tok = substr(tok, 2, length(tok) - 2)
    name = substr(tok, 3, length(tok) - 3)
    if (!(name in ENVIRON) || ENVIRON[name] == "") {
      printf "livefuse-render-config: line %d: %s is not set\n", NR, name > "/dev/stderr"; bad = 1; exit 1
    }
    v = ENVIRON[name]
    for (c = 1; c <= length(v); c++) if (index(ctl, substr(v, c, 1))) {
      printf "livefuse-render-config: %s holds a control character\n", name > "/dev/stderr"; bad = 1; exit 1
    }
    q = ""
    for (c = 1; c <= length(v); c++) {
      ch = substr(v, c, 1)
      if (ch == "\\" || ch == "\"") q = q "\\"
      q = q ch
    }
    out = out substr(line, 1, RSTART - 1) "\"" q "\""
    line = substr(line, RSTART + RLENGTH)
  }
  print out line
}
END { if (bad) exit 1 }
' "$1" > "$tmp"
mv "$tmp" "$2"
trap - EXIT
