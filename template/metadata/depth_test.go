package metadata

import (
	"runtime"
	"strings"
	"testing"
)

// A small, deeply nested metadata.json is refused at MaxDepth, and what parsing it costs stays in proportion
// to its size (before the limit, a path string built per level made 1 MiB of '[' cost gigabytes).
func TestParseDeepNesting(t *testing.T) {
	for _, doc := range []string{
		strings.Repeat("[", 1<<20),
		strings.Repeat(`{"a":`, 200_000),
		`{"template":` + strings.Repeat(`{"k":`, MaxDepth) + `1` + strings.Repeat(`}`, MaxDepth) + `}`,
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := Parse([]byte(doc))
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("Parse of %d bytes nested deeply succeeded", len(doc))
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
			t.Errorf("Parse of %d bytes allocated %d MiB, want at most 64 MiB", len(doc), got>>20)
		}
		if !strings.Contains(err.Error(), "nested deeper") {
			t.Errorf("Parse: %v, want the nesting limit", err)
		}
	}
}
