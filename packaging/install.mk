# packaging/install.mk: `make install` for BitBuilder, laid out as a distribution package would be.
#
# The top-level Makefile includes this file after `make build` has put bitbuilderd, bbctl and bitbuilder-generator
# into ./bin; it also works alone: make -f packaging/install.mk install DESTDIR=/tmp/root
#
#   $(PREFIX)/bin/bbctl                                   the CLI
#   $(PREFIX)/lib/bitbuilder/bitbuilderd                  the daemon: a private executable, started only by systemd
#                                                         (the /usr/lib/<package>/ convention, which systemd's own
#                                                         helpers follow and every distribution accepts)
#   $(PREFIX)/lib/bitbuilder/empty/                       empty bottom layer of the tenants' confext overlays
#   $(PREFIX)/lib/systemd/system-generators/bitbuilder-generator
#   $(PREFIX)/lib/systemd/system/bitbuilderd.{service,socket}, bitbuilderd-ro.socket
#   $(PREFIX)/lib/sysusers.d/bitbuilder.conf, $(PREFIX)/lib/tmpfiles.d/bitbuilder.conf
#   $(PREFIX)/lib/sysctl.d/50-bitbuilder.conf            inotify limits for many containers
#   $(PREFIX)/share/man/man1/bbctl.1, man8/bitbuilderd.8  the man pages (packaging/man, generated from the help text)
#   $(PREFIX)/share/bash-completion/completions/bbctl     bash-completion's directory for lazily loaded completions
#   $(PREFIX)/share/zsh/vendor-completions/_bbctl         on zsh's $fpath on Debian (BB_ZSHCOMPDIR=.../site-functions
#                                                         for zsh's upstream default)
#   $(PREFIX)/share/fish/vendor_completions.d/bbctl.fish  fish's directory for completions of installed programs
#
# Variables: DESTDIR (staging root, default empty), PREFIX (default /usr), BB_BIN (where the built binaries are,
# default ./bin). Rendered tenant units and the generator assume PREFIX=/usr (package units' Config defaults).
# Nothing here enables or starts units: packages do that in their maintainer scripts (or presets), see
# packaging/deb/build-deb.sh.

BB_PACKAGING := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

PREFIX ?= /usr
DESTDIR ?=
BB_BIN ?= bin
BB_INSTALL ?= install

BB_BINDIR := $(PREFIX)/bin
BB_LIBEXECDIR := $(PREFIX)/lib/bitbuilder
BB_UNITDIR := $(PREFIX)/lib/systemd/system
BB_GENERATORDIR := $(PREFIX)/lib/systemd/system-generators
BB_SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
BB_TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
BB_SYSCTLDIR := $(PREFIX)/lib/sysctl.d
BB_MANDIR := $(PREFIX)/share/man
BB_BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
BB_ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
BB_FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

BB_PROGRAMS := bitbuilderd bbctl bitbuilder-generator

.PHONY: install
install:
	@for p in $(BB_PROGRAMS); do \
		test -x "$(BB_BIN)/$$p" || { echo "install: $(BB_BIN)/$$p is missing (run make build first)" >&2; exit 1; }; \
	done
	$(BB_INSTALL) -d -m 0755 "$(DESTDIR)$(BB_BINDIR)" "$(DESTDIR)$(BB_LIBEXECDIR)" "$(DESTDIR)$(BB_UNITDIR)" \
		"$(DESTDIR)$(BB_GENERATORDIR)" "$(DESTDIR)$(BB_SYSUSERSDIR)" "$(DESTDIR)$(BB_TMPFILESDIR)" "$(DESTDIR)$(BB_SYSCTLDIR)"
	$(BB_INSTALL) -d -m 0555 "$(DESTDIR)$(BB_LIBEXECDIR)/empty"
	$(BB_INSTALL) -m 0755 "$(BB_BIN)/bbctl" "$(DESTDIR)$(BB_BINDIR)/bbctl"
	$(BB_INSTALL) -m 0755 "$(BB_BIN)/bitbuilderd" "$(DESTDIR)$(BB_LIBEXECDIR)/bitbuilderd"
	$(BB_INSTALL) -m 0755 "$(BB_BIN)/bitbuilder-generator" "$(DESTDIR)$(BB_GENERATORDIR)/bitbuilder-generator"
	sed -e 's|/usr/lib/bitbuilder/|$(BB_LIBEXECDIR)/|g' "$(BB_PACKAGING)/systemd/bitbuilderd.service" \
		>"$(DESTDIR)$(BB_UNITDIR)/bitbuilderd.service"
	chmod 0644 "$(DESTDIR)$(BB_UNITDIR)/bitbuilderd.service"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/systemd/bitbuilderd.socket" "$(DESTDIR)$(BB_UNITDIR)/bitbuilderd.socket"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/systemd/bitbuilderd-ro.socket" "$(DESTDIR)$(BB_UNITDIR)/bitbuilderd-ro.socket"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/sysusers.d/bitbuilder.conf" "$(DESTDIR)$(BB_SYSUSERSDIR)/bitbuilder.conf"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/tmpfiles.d/bitbuilder.conf" "$(DESTDIR)$(BB_TMPFILESDIR)/bitbuilder.conf"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/sysctl.d/50-bitbuilder.conf" "$(DESTDIR)$(BB_SYSCTLDIR)/50-bitbuilder.conf"
	$(BB_INSTALL) -d -m 0755 "$(DESTDIR)$(BB_MANDIR)/man1" "$(DESTDIR)$(BB_MANDIR)/man8" \
		"$(DESTDIR)$(BB_BASHCOMPDIR)" "$(DESTDIR)$(BB_ZSHCOMPDIR)" "$(DESTDIR)$(BB_FISHCOMPDIR)"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/man/bbctl.1" "$(DESTDIR)$(BB_MANDIR)/man1/bbctl.1"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/man/bitbuilderd.8" "$(DESTDIR)$(BB_MANDIR)/man8/bitbuilderd.8"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/completions/bbctl.bash" "$(DESTDIR)$(BB_BASHCOMPDIR)/bbctl"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/completions/_bbctl" "$(DESTDIR)$(BB_ZSHCOMPDIR)/_bbctl"
	$(BB_INSTALL) -m 0644 "$(BB_PACKAGING)/completions/bbctl.fish" "$(DESTDIR)$(BB_FISHCOMPDIR)/bbctl.fish"
