package daemon

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bitbuilder/bitbuilder/rpc"
)

// logChange logs a change a call made, once, with who made it: the caller's uid and pid as the
// kernel reports them (SO_PEERCRED), so that the journal says who changed what. The lines are
// rate-limited per logger (changeBudget): under a flood of changes (thousands of creates a second)
// a line each would cost more than the changes themselves, so past the budget a change is logged
// at debug level and the next info line says how many were not ("notLogged"); Watch reports
// every change.
func logChange(ctx context.Context, log *slog.Logger, msg string, args ...any) {
	if p, ok := rpc.PeerOf(ctx); ok {
		args = append(args, "uid", p.UID, "pid", p.PID)
	}
	b, _ := changeBudgets.LoadOrStore(log, &budget{})
	ok, skipped := b.(*budget).take(time.Now())
	if !ok {
		log.Debug(msg, args...)
		return
	}
	if skipped > 0 {
		args = append(args, "notLogged", skipped)
	}
	log.Info(msg, args...)
}

// changeBudgets holds each logger's budget of change lines.
var changeBudgets sync.Map // *slog.Logger -> *budget

const (
	changeLinesPerSecond = 20  // change lines a logger gets each second, on average
	changeLinesBurst     = 100 // and at once
)

// budget is a token bucket of log lines, counting the lines it refused since the last it gave.
type budget struct {
	mu      sync.Mutex
	tokens  float64
	last    time.Time
	skipped int
}

func (b *budget) take(now time.Time) (ok bool, skipped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = changeLinesBurst
	} else {
		b.tokens = min(changeLinesBurst, b.tokens+now.Sub(b.last).Seconds()*changeLinesPerSecond)
	}
	b.last = now
	if b.tokens < 1 {
		b.skipped++
		return false, 0
	}
	b.tokens--
	skipped, b.skipped = b.skipped, 0
	return true, skipped
}

// changedFields lists the names set in given, sorted and comma-separated.
func changedFields(given map[string]bool) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(given)) {
		if given[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ",")
}
