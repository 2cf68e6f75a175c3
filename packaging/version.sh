#!/bin/sh
# The package version, from git describe: v1.2.3 → 1.2.3, three commits
# later → 1.2.3+3.gabcdef0; without a tag 0~git<commit time>.<hash>, which
# still sorts upwards; outside git 0~dev. Valid for dpkg and rpm.
set -e
if d=$(git describe --tags --match 'v[0-9]*' --dirty=.dirty 2>/dev/null); then
	echo "${d#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/'
elif git rev-parse --git-dir >/dev/null 2>&1; then
	echo "0~git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).g$(git rev-parse --short HEAD)"
else
	echo "0~dev"
fi
