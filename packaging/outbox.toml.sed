# Turns config.example.toml into the /etc/outbox/outbox.toml the packages
# install (make package; packaging/package_test.go checks the result): the
# host's own name and the listeners outbox.socket passes stay defaults, and
# the example's aliases do not take effect. Every key stays documented.
1,2c\
# Outbox configuration, installed by the outbox package: a conffile, so\
# your changes are kept on upgrade. Readable by root and group outbox only\
# (the daemon and the set-group-ID sendmail): keep secrets here or in\
# password_file, mode 0640 root:outbox. Commented lines show defaults.\
# Check a change with `outbox check`, apply it with `systemctl reload outbox`.
s/^hostname = /# hostname = /
s/^domain = /# domain = /
/^\[\[listener\]\]/,/^address = /{
s/^/# /
/^# address = /a\
# Without [[listener]] tables outbox listens on 127.0.0.1:25 and [::1]:25,\
# the sockets outbox.socket passes. A listener you add needs its address in\
# outbox.socket too: `systemctl edit outbox.socket`, [Socket] ListenStream=.
}
/^\[aliases\]/,/^$/s/^root = /# root = /
