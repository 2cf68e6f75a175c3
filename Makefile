# make package: the .deb and .rpm in build/ (see README, "Install").
# Without make, the same commands:
#   go build -trimpath -ldflags "-X main.version=$(packaging/version.sh) -X main.maildropConfig=/etc/outbox/outbox.toml" -o build/outbox ./cmd/outbox
#   sed -f packaging/outbox.toml.sed config.example.toml > build/outbox.toml
#   (each maintainer script is packaging/scripts/common.sh + packaging/scripts/NAME)
#   GOARCH=amd64 OUTBOX_VERSION=$(packaging/version.sh) go tool -modfile=packaging/tools/go.mod nfpm package -f packaging/nfpm.yaml -p deb -t build/

GO ?= go
GOARCH ?= $(shell $(GO) env GOARCH)
VERSION ?= $(shell packaging/version.sh)
# The only configuration a set-group-ID sendmail reads (cmd/outbox/privilege.go).
MAILDROP_CONFIG ?= /etc/outbox/outbox.toml
NFPM = $(GO) tool -modfile=packaging/tools/go.mod nfpm
SCRIPTS = deb-postinst deb-prerm deb-postrm rpm-pre rpm-post rpm-preun rpm-postun

.PHONY: all package deb rpm test clean
all: build/outbox

package: deb rpm

deb rpm: build/outbox build/outbox.toml $(SCRIPTS:%=build/scripts/%)
	GOARCH=$(GOARCH) OUTBOX_VERSION=$(VERSION) $(NFPM) package -f packaging/nfpm.yaml -p $@ -t build/

build/outbox: FORCE
	CGO_ENABLED=0 GOARCH=$(GOARCH) $(GO) build -trimpath \
		-ldflags "-X main.version=$(VERSION) -X main.maildropConfig=$(MAILDROP_CONFIG)" \
		-o $@ ./cmd/outbox

build/outbox.toml: config.example.toml packaging/outbox.toml.sed
	@mkdir -p build
	sed -f packaging/outbox.toml.sed config.example.toml > $@

build/scripts/%: packaging/scripts/common.sh packaging/scripts/%
	@mkdir -p build/scripts
	{ echo '#!/bin/sh'; cat $^; } > $@
	chmod 0755 $@

test:
	$(GO) test ./...

clean:
	rm -rf build

FORCE:
