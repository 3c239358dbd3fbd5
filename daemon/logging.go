package daemon

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/bitbuilder/bitbuilder/rpc"
)

// logChange logs a change a call made, once, with who made it: the caller's uid and pid as the
// kernel reports them (SO_PEERCRED), so that the journal says who changed what.
func logChange(ctx context.Context, log *slog.Logger, msg string, args ...any) {
	if p, ok := rpc.PeerOf(ctx); ok {
		args = append(args, "uid", p.UID, "pid", p.PID)
	}
	log.Info(msg, args...)
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
