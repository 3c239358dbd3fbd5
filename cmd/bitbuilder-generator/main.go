// Command bitbuilder-generator is BitBuilder's systemd generator (systemd.generator(7)). At boot, and on every
// daemon-reload, systemd runs it as
//
//	bitbuilder-generator NORMAL-DIR [EARLY-DIR LATE-DIR]
//
// It reads the boot registry the daemon keeps (/etc/bitbuilder/boot-registry.json, or $BITBUILDER_REGISTRY) and
// writes every tenant's units into NORMAL-DIR, with package units doing all the work. It writes nowhere else,
// starts no other process, and logs to /dev/kmsg (to stderr if that cannot be opened, or when
// $SYSTEMD_LOG_TARGET is "console"). A bad entry costs only that tenant; a missing, empty or unreadable registry
// means no tenants: the generator logs why and exits 0, so it never holds up boot. Each skipped entry gets a log
// line; in the kernel log, which drops records beyond a burst of 10, only the first 7 do, then a count of the
// rest. In the initrd ($SYSTEMD_IN_INITRD=1) it does nothing.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/bitbuilder/bitbuilder/units"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv))
}

// run is the whole generator; it returns the exit status.
func run(args []string, getenv func(string) string) int {
	log := openLog(getenv("SYSTEMD_LOG_TARGET"))
	defer log.Close()
	if len(args) != 1 && len(args) != 3 {
		log.printf(3, "usage: bitbuilder-generator NORMAL-DIR [EARLY-DIR LATE-DIR], got %d arguments", len(args))
		return 2
	}
	if getenv("SYSTEMD_IN_INITRD") == "1" {
		// Tenants belong to the booted host, not to the initrd (whose /etc has no registry anyway).
		return 0
	}
	path := getenv("BITBUILDER_REGISTRY")
	if path == "" {
		path = units.DefaultRegistryPath
	}
	reg, skipped, err := units.ReadRegistry(path)
	if err != nil {
		log.printf(4, "no tenants generated: %v", err)
		return 0
	}
	var lines []string
	for _, s := range skipped {
		lines = append(lines, fmt.Sprintf("skipped registry %s", s))
	}
	var cfg units.Config
	if reg.Units != nil {
		cfg = *reg.Units // render what the daemon rendered: its state directory and tool paths
	}
	rep, err := units.Generate(args[0], reg.Tenants, cfg)
	if err != nil {
		log.printf(3, "no tenants generated: %v", err)
		return 1
	}
	for _, s := range rep.Skipped {
		lines = append(lines, fmt.Sprintf("skipped tenant %q: %s", s.Name, s.Reason))
	}
	// The kernel drops user-space kmsg records beyond a burst of 10 per 5 s: list the first few skipped entries
	// and say how many more there are, so that the summary line still gets through.
	for i, l := range lines {
		if log.kmsg && i == kmsgMaxSkipLines && len(lines) > kmsgMaxSkipLines+1 {
			log.printf(4, "%d more entries of %s skipped (not listed, to stay within the kernel log's rate limit)", len(lines)-i, path)
			break
		}
		log.printf(4, "%s", l)
	}
	log.printf(6, "generated %d units for %d tenants from %s (%d entries skipped)", rep.Units, rep.Tenants, path, len(lines))
	return 0
}

// kmsgMaxSkipLines is how many skipped entries are listed one per line in the kernel log.
const kmsgMaxSkipLines = 7

// logger writes one record per line to the kernel log (with a syslog priority prefix) or to stderr.
type logger struct {
	w    io.WriteCloser
	kmsg bool
}

func openLog(target string) logger {
	if target != "console" {
		if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY|os.O_APPEND, 0); err == nil {
			return logger{w: f, kmsg: true}
		}
	}
	return logger{w: nopCloser{os.Stderr}}
}

func (l logger) printf(prio int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if l.kmsg {
		fmt.Fprintf(l.w, "<%d>bitbuilder-generator: %s\n", prio, msg)
		return
	}
	fmt.Fprintf(l.w, "bitbuilder-generator: %s\n", msg)
}

func (l logger) Close() error { return l.w.Close() }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
