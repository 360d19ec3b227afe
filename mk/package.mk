# Debian packages, install/uninstall, and their checks (issue 6). Included from the
# top-level Makefile, after mk/cross.mk (deb-aarch64 builds with its settings).
#
#   make deb            host-architecture .deb (cargo-deb; `cargo install cargo-deb --locked`)
#   make deb-aarch64    arm64 .deb from `make aarch64`
#   make check-deb      list the newest package (or DEB=path) and check every path in it
#   make check-unit     systemd-analyze verify the unit (and the Jetson drop-in)
#   make check-systemd  the unit + nvpmodel watcher under a real systemd (namespaces, root)
#   make install        PREFIX=/usr/local DESTDIR= — for systems without dpkg
#   make uninstall

CARGO          ?= cargo
DEB_PROFILE    ?= dist
DEB_DIR        ?= target/debian
DEB            ?=
PREFIX         ?= /usr/local
DESTDIR        ?=
BINDIR         ?= $(PREFIX)/bin
LIBDIR         ?= $(PREFIX)/lib
LIBEXECDIR     ?= $(PREFIX)/libexec/edgewatt
TMPFILESDIR    ?= $(LIBDIR)/tmpfiles.d
DOCDIR         ?= $(PREFIX)/share/doc/edgewatt
SYSCONFDIR     ?= /etc
# systemd and udev look in /etc and /usr/lib; systemd also in /usr/local/lib, udev not.
UNITDIR        ?= $(LIBDIR)/systemd/system
UDEVRULESDIR   ?= /etc/udev/rules.d
INSTALL_BIN    ?= $(or $(CARGO_TARGET_DIR),target)/release/edgewatt
CROSS_PROFILE  ?= dist
CROSS_TARGET_DIR ?= target/cross

.PHONY: deb deb-aarch64 check-deb check-unit check-systemd install uninstall

## deb: Debian package for this machine's architecture ($(DEB_DIR)/)
deb:
	@command -v cargo-deb >/dev/null || { echo "cargo-deb not found: cargo install cargo-deb --locked" >&2; exit 1; }
	$(CARGO) deb --locked --profile $(DEB_PROFILE) --output $(DEB_DIR)/

## deb-aarch64: arm64 package of the `make aarch64` binary ($(DEB_DIR)/)
# --no-build: the binary comes from `make aarch64` (its wrapper compilers); --no-strip:
# the dist profile already strips debug info, and the host strip cannot read arm64.
deb-aarch64: aarch64
	@command -v cargo-deb >/dev/null || { echo "cargo-deb not found: cargo install cargo-deb --locked" >&2; exit 1; }
	CARGO_TARGET_DIR=$(CROSS_TARGET_DIR) $(CARGO) deb --no-build --no-strip \
		--target aarch64-unknown-linux-gnu --profile $(CROSS_PROFILE) --output $(DEB_DIR)/

## check-deb: every path in the package is expected, and every expected path is there
check-deb:
	cross/check-deb.sh $(or $(DEB),$$(ls -t $(DEB_DIR)/*.deb 2>/dev/null | head -n1))

## check-unit: systemd-analyze verify on the unit and the unit + Jetson drop-in
check-unit:
	cross/check-unit.sh $(INSTALL_BIN)

## check-systemd: the unit and the nvpmodel .path/oneshot under a real systemd in its
# own namespaces (root; a fake Jetson, real Mosquitto and model); exit 77 = cannot here
check-systemd: model
	@sh cross/check-systemd.sh $(INSTALL_BIN) $(MODEL_FILE) || { rc=$$?; [ $$rc -eq 77 ] || exit $$rc; }

## install: binary, units, sysusers, udev rule, modules-load, tmpfiles, power-mode script, config (kept if present), docs
install:
	@[ -x "$(INSTALL_BIN)" ] || { echo "no binary '$(INSTALL_BIN)': make build (or make aarch64 and INSTALL_BIN=…)" >&2; exit 1; }
	install -Dm755 "$(INSTALL_BIN)" "$(DESTDIR)$(BINDIR)/edgewatt"
	tmp=$$(mktemp) && sed 's#^ExecStart=/usr/bin/edgewatt #ExecStart=$(BINDIR)/edgewatt #' systemd/edgewatt.service > "$$tmp" \
		&& install -Dm644 "$$tmp" "$(DESTDIR)$(UNITDIR)/edgewatt.service"; rc=$$?; rm -f "$$tmp"; exit $$rc
	install -Dm644 systemd/edgewatt.sysusers "$(DESTDIR)$(LIBDIR)/sysusers.d/edgewatt.conf"
	install -Dm644 systemd/edgewatt.modules-load "$(DESTDIR)$(LIBDIR)/modules-load.d/edgewatt.conf"
	install -Dm644 udev/99-edgewatt-i2c.rules "$(DESTDIR)$(UDEVRULESDIR)/99-edgewatt-i2c.rules"
	install -Dm644 systemd/edgewatt-cpufreq.tmpfiles "$(DESTDIR)$(TMPFILESDIR)/edgewatt-cpufreq.conf"
	install -Dm644 systemd/edgewatt-rapl.tmpfiles "$(DESTDIR)$(TMPFILESDIR)/edgewatt-rapl.conf"
	install -Dm755 systemd/edgewatt-power-mode "$(DESTDIR)$(LIBEXECDIR)/power-mode"
	install -Dm644 systemd/edgewatt-power-mode.path "$(DESTDIR)$(UNITDIR)/edgewatt-power-mode.path"
	tmp=$$(mktemp) && sed 's#^ExecStart=/usr/libexec/edgewatt/power-mode#ExecStart=$(LIBEXECDIR)/power-mode#' systemd/edgewatt-power-mode.service > "$$tmp" \
		&& install -Dm644 "$$tmp" "$(DESTDIR)$(UNITDIR)/edgewatt-power-mode.service"; rc=$$?; rm -f "$$tmp"; exit $$rc
	@if [ -e "$(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml" ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml"; \
	else \
		install -Dm644 config/edgewatt.toml "$(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml"; \
	fi
	install -Dm644 docs/service.md "$(DESTDIR)$(DOCDIR)/service.md"
	install -Dm644 docs/config.md "$(DESTDIR)$(DOCDIR)/config.md"
	install -Dm644 systemd/jetson-video.conf "$(DESTDIR)$(DOCDIR)/examples/jetson-video.conf"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers "$(LIBDIR)/sysusers.d/edgewatt.conf"; \
		systemd-tmpfiles --create "$(TMPFILESDIR)/edgewatt-cpufreq.conf" "$(TMPFILESDIR)/edgewatt-rapl.conf" || true; \
		systemctl daemon-reload; \
		udevadm control --reload-rules && udevadm trigger --subsystem-match=i2c-dev || true; \
		modprobe i2c-dev || true; \
		echo "installed; edit $(SYSCONFDIR)/edgewatt/edgewatt.toml, then: systemctl enable --now edgewatt"; \
	fi

## uninstall: the installed files; the config only if unchanged; never /var/lib/edgewatt
uninstall:
	-@[ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl disable --now edgewatt 2>/dev/null || true
	rm -f "$(DESTDIR)$(BINDIR)/edgewatt" "$(DESTDIR)$(UNITDIR)/edgewatt.service" \
		"$(DESTDIR)$(LIBDIR)/sysusers.d/edgewatt.conf" "$(DESTDIR)$(LIBDIR)/modules-load.d/edgewatt.conf" \
		"$(DESTDIR)$(UDEVRULESDIR)/99-edgewatt-i2c.rules" \
		"$(DESTDIR)$(TMPFILESDIR)/edgewatt-cpufreq.conf" "$(DESTDIR)$(TMPFILESDIR)/edgewatt-rapl.conf" \
		"$(DESTDIR)$(UNITDIR)/edgewatt-power-mode.path" "$(DESTDIR)$(UNITDIR)/edgewatt-power-mode.service"
	rm -rf "$(DESTDIR)$(DOCDIR)" "$(DESTDIR)$(LIBEXECDIR)"
	@if cmp -s config/edgewatt.toml "$(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml"; then \
		rm -f "$(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml"; \
		rmdir "$(DESTDIR)$(SYSCONFDIR)/edgewatt" 2>/dev/null || true; \
	elif [ -e "$(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml" ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/edgewatt/edgewatt.toml (edited)"; \
	fi
	-@[ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
