# Shared by scripts/test: install the Debian packages some tests need (a Prometheus server,
# PgBouncer, Chromium, …), listed one per line in scripts/lib/debian-packages, when missing.
#   ensure_debian_packages
# Needs root (CI runs as root here); without it, the tests that need a package skip with the
# reason, or fail under TQ_REQUIRE_SERVICES=1.

ensure_debian_packages() {
  local list=scripts/lib/debian-packages missing=() package
  [ -f "$list" ] || return 0
  while read -r package; do
    package=${package%%#*}
    package=${package//[[:space:]]/}
    [ -n "$package" ] || continue
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done <"$list"
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "== not installing ${missing[*]}: needs root and apt-get (the tests that use them will say so)" >&2
    return 0
  fi
  echo "== installing Debian packages: ${missing[*]} (once)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}
