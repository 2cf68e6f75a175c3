# Shared by the maintainer scripts of the .deb and the .rpm: the Makefile
# puts this file at the top of each one (nfpm takes one file per script).
# Modes: docs/design.md, "Set-group-ID maildrop".

OUTBOX_SPOOL=/var/spool/outbox

# outbox_user creates the system user and group outbox, from the
# sysusers.d file when systemd-sysusers exists, else as that file says.
outbox_user() {
	if command -v systemd-sysusers >/dev/null 2>&1 && [ -f /usr/lib/sysusers.d/outbox.conf ]; then
		systemd-sysusers /usr/lib/sysusers.d/outbox.conf
	fi
	if ! getent group outbox >/dev/null; then
		if command -v addgroup >/dev/null 2>&1; then
			addgroup --system --quiet outbox
		else
			groupadd --system outbox
		fi
	fi
	if ! getent passwd outbox >/dev/null; then
		if command -v adduser >/dev/null 2>&1; then
			adduser --system --quiet --ingroup outbox --home "$OUTBOX_SPOOL" --no-create-home \
				--shell /usr/sbin/nologin --gecos "Outbox mail relay" outbox
		else
			useradd --system --gid outbox --home-dir "$OUTBOX_SPOOL" --no-create-home \
				--shell /usr/sbin/nologin --comment "Outbox mail relay" outbox
		fi
	fi
}

# outbox_dirs creates the spool and runtime directories, or puts their
# owner and mode right, as tmpfiles.d/outbox.conf lists them: the same as
# systemd-tmpfiles --create, without needing it (a chroot, no systemd).
outbox_dirs() {
	while read -r type path mode user group age; do
		[ "$type" = d ] || continue
		mkdir -p "$path"
		chown "$user:$group" "$path"
		chmod "$mode" "$path"
	done </usr/lib/tmpfiles.d/outbox.conf
}

# outbox_systemd_running reports whether systemd manages this system (not
# a chroot or a container without it).
outbox_systemd_running() {
	[ -d /run/systemd/system ]
}
