package template

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Phase names the step a long operation is in.
type Phase string

// The phases, in order.
const (
	PhaseFetching   Phase = "fetching"
	PhaseCheckout   Phase = "checkout"
	PhaseValidating Phase = "validating"
	PhasePinning    Phase = "pinning"
)

// Progress is one progress report of Add or Update. Zero numbers are
// unknown.
type Progress struct {
	Phase Phase
	// Message is a human-readable line, e.g. the remote's "Counting
	// objects: 100% (5/5), done." or "checked out 512 files".
	Message string
	// Objects and TotalObjects count the objects the remote reports, or the
	// files written in the checkout phase.
	Objects      int
	TotalObjects int
	// Bytes is pack bytes received so far (fetching) or bytes written
	// (checkout).
	Bytes int64
}

// reporter serialises and throttles calls of a progress callback: phase
// changes and final lines always go through, repeated updates at most every
// interval.
type reporter struct {
	mu       sync.Mutex
	fn       func(Progress)
	last     time.Time
	phase    Phase
	interval time.Duration
	objects  int
	total    int
	bytes    int64
}

func newReporter(fn func(Progress)) *reporter {
	return &reporter{fn: fn, interval: 100 * time.Millisecond}
}

func (r *reporter) report(p Progress, force bool) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.Phase != r.phase {
		force = true
		r.phase = p.Phase
		r.objects, r.total, r.bytes = 0, 0, 0
	}
	// Carry known numbers forward so each report is complete.
	if p.Objects == 0 {
		p.Objects = r.objects
	}
	if p.TotalObjects == 0 {
		p.TotalObjects = r.total
	}
	if p.Bytes == 0 {
		p.Bytes = r.bytes
	}
	r.objects, r.total, r.bytes = p.Objects, p.TotalObjects, p.Bytes
	now := time.Now()
	if !force && now.Sub(r.last) < r.interval {
		return
	}
	r.last = now
	r.fn(p)
}

func (r *reporter) setPhase(ph Phase, msg string) {
	r.report(Progress{Phase: ph, Message: msg}, true)
}

// sidebandWriter turns the remote's sideband progress text into reports.
type sidebandWriter struct {
	r       *reporter
	partial []byte
}

var (
	countRe = regexp.MustCompile(`\((\d+)/(\d+)\)`)
	totalRe = regexp.MustCompile(`^Total (\d+)`)
	enumRe  = regexp.MustCompile(`^(?:Enumerating|Counting) objects: (\d+)(?:, done)?\.?$`)
)

func (w *sidebandWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexAny(string(w.partial), "\r\n")
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
		if line == "" {
			continue
		}
		pr := Progress{Phase: PhaseFetching, Message: line}
		force := strings.HasSuffix(line, "done.")
		if m := countRe.FindStringSubmatch(line); m != nil {
			pr.Objects, _ = strconv.Atoi(m[1])
			pr.TotalObjects, _ = strconv.Atoi(m[2])
		} else if m := totalRe.FindStringSubmatch(line); m != nil {
			pr.TotalObjects, _ = strconv.Atoi(m[1])
			pr.Objects = pr.TotalObjects
			force = true
		} else if m := enumRe.FindStringSubmatch(line); m != nil {
			pr.TotalObjects, _ = strconv.Atoi(m[1])
		}
		w.r.report(pr, force)
	}
	return len(p), nil
}

// packBytes sums the sizes of the files in a repository's objects/pack
// directory, including the temporary pack being received.
func packBytes(gitDir string) int64 {
	dir := filepath.Join(gitDir, "objects", "pack")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}
