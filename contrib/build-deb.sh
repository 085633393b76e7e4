#!/usr/bin/env bash
# Build the Debian package with Debian's own tools: bash contrib/build-deb.sh OUTDIR
# Writes OUTDIR/relaywatch_VERSION_all.deb (and its .buildinfo and .changes) and prints the
# .deb's path last. The build happens in a copy of the tree (tracked files and new files
# that git does not ignore, so build/, .venv and caches stay out), with contrib/debian as
# its debian/; the checkout is not written to. Needs the Build-Depends of
# contrib/debian/control (.ci/run installs them); dpkg-checkbuilddeps names any missing.
set -euo pipefail
# Debian's tools with Debian's python3: not a virtual environment's or pyenv's first on PATH.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE

if [ $# -ne 1 ]; then
    echo "usage: bash contrib/build-deb.sh OUTDIR" >&2
    exit 2
fi
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

version=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' "$top/pyproject.toml" | head -n1)
changelog_version=$(dpkg-parsechangelog -l "$top/contrib/debian/changelog" -S Version)
if [ "$version" != "$changelog_version" ]; then
    echo "build-deb.sh: pyproject.toml says version $version but contrib/debian/changelog says" \
         "$changelog_version: add a changelog entry (dch --changelog contrib/debian/changelog -v $version)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/relaywatch-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/relaywatch-$version"
mkdir "$src"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Files deleted in the work tree but still in the index are left out.
    (cd "$top" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null --no-recursion -T - -cf -) | tar -C "$src" -xf -
else
    tar -C "$top" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
        --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -a "$top/contrib/debian" "$src/debian"

cd "$src"
dpkg-checkbuilddeps
dpkg-buildpackage --build=binary --no-sign >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed (the last 60 lines are above)" >&2
    exit 1
}
deb="relaywatch_${version}_all.deb"
cp "$work/$deb" "$work"/relaywatch_"${version}"_*.buildinfo "$work"/relaywatch_"${version}"_*.changes "$out/"
cp "$work/build.log" "$out/relaywatch_${version}_build.log"
echo "$out/$deb"
