package main

import (
	"strings"
	"testing"
)

// TestSummarize: ratios are gathered per benchmark over the runs, also when a child process's
// log split a benchmark's line, the median is checked against the goal, and a FAIL is reported.
func TestSummarize(t *testing.T) {
	in := strings.Join([]string{
		"pkg: github.com/bitbuilder/bitbuilder/daemon",
		"BenchmarkDaemonCPU/clients=32-2   \ttime=2026-12-08T00:17:31Z level=WARN msg=\"records only\"",
		"    4000\t478187 ns/op\t 135.0 cpu-us/create\t 1.350 create-cpu-ratio\t 0.9 get-cpu-ratio",
		"BenchmarkDaemonCPU/clients=32-2   \t4000\t478187 ns/op\t 1.10 create-cpu-ratio\t 0.8 get-cpu-ratio",
		"BenchmarkDaemonCPU/clients=32-2   \t4000\t478187 ns/op\t 0.90 create-cpu-ratio\t 1.2 get-cpu-ratio",
		"BenchmarkListStreaming-2 \t 90 \t 49784559 ns/op \t 0.7 ratio",
		"pkg: github.com/bitbuilder/bitbuilder/template/validate",
		"BenchmarkRootFS50k-2 \t 5 \t 118129362 ns/op \t 48730739 validate-ns/op \t 0.70 x-walk",
		"PASS",
	}, "\n")
	var out strings.Builder
	failed, err := summarize(strings.NewReader(in), &out)
	if err != nil || failed {
		t.Fatalf("summarize: failed=%v err=%v", failed, err)
	}
	table := out.String()[strings.Index(out.String(), "Summary"):]
	for _, want := range []string{
		"daemon DaemonCPU/clients=32                          create-cpu-ratio         3       0.9       1.1      1.35     <= 1 MISSED",
		"daemon DaemonCPU/clients=32                          get-cpu-ratio            3       0.8       0.9       1.2     <= 1 met",
		"daemon ListStreaming                                 ratio                    1       0.7       0.7       0.7   <= 1.5 met",
		"template/validate RootFS50k                          x-walk                   1       0.7       0.7       0.7     <= 3 met",
		"1 goals missed",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if failed, _ := summarize(strings.NewReader("--- FAIL: BenchmarkX\nFAIL\n"), &out); !failed {
		t.Error("a FAIL line was not reported")
	}
}
