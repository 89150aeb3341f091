# Shared by scripts/test and scripts/example: create a virtualenv from pyproject.toml, and
# re-create it when pyproject.toml (or this file) changes.
#   ensure_venv DIR PYTHON [EXTRA PIP REQUIREMENTS...]

ensure_venv() {
  local dir=$1 py=$2; shift 2
  local stamp
  stamp=$(cat pyproject.toml scripts/lib/venv.sh | sha256sum | cut -c1-16)-$(printf '%s ' "$@" | sha256sum | cut -c1-8)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "django_tq needs Python 3.11 or newer ($py is older)" >&2; return 1; }
  echo "== creating $dir with $py (once; again only when pyproject.toml changes)"
  rm -rf "$dir"
  "$py" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip
  "$dir/bin/pip" install -q -e ".[dev]" "$@"
  echo "$stamp" > "$dir/.stamp"
}
