# Build and install the ACRN lifecycle suite.
#
#   make                      build the release binaries
#   make install DESTDIR=/tmp/root PREFIX=/usr
#   make install-sim          also install the simulators (ioc-sim, acrn-dm-sim)
#   make verify-units         install into a temp root and check it with systemd-analyze
#
# NO_BUILD=1 installs what is already built; PROFILE=dev installs the debug build.

PREFIX      ?= /usr
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
UNITDIR     ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR      ?= $(PREFIX)/share/doc/acrn-lifecycle
PROFILE     ?= release
CARGO       ?= cargo
NO_BUILD    ?=

DAEMONS := sos-lcs acrnd acrnctl
SIMS    := ioc-sim acrn-dm-sim
UNITS   := sos-lcs.service acrnd.service
OUTDIR  := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: all build install install-sim verify-units

all: build

build:
	$(CARGO) build --locked --profile $(PROFILE) --bins

install: $(if $(NO_BUILD),,build)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	for b in $(DAEMONS); do install -m 0755 $(OUTDIR)/$$b $(DESTDIR)$(BINDIR)/$$b; done
	for u in $(UNITS); do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' systemd/$$u.in \
			> $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -m 0644 systemd/acrn.tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/acrn.conf
	install -m 0644 README.md BENCHMARKS.md $(DESTDIR)$(DOCDIR)/

install-sim: install
	for b in $(SIMS); do install -m 0755 $(OUTDIR)/$$b $(DESTDIR)$(BINDIR)/$$b; done

verify-units:
	PROFILE=$(PROFILE) NO_BUILD=$(NO_BUILD) sh systemd/verify.sh
