// Command benchsummary reads `go test -bench` output on standard input, passes it through, and
// then prints one table of every ratio the project's benchmarks report against its goal: for
// each benchmark and ratio metric, the minimum, median and maximum over the runs (-count), the
// goal, and whether the median meets it. It exits 1 when a test failed (a FAIL line).
//
// The goals are the project's (issue 12 and the benchmarks' doc comments); a ratio metric
// without a goal here is listed with "-". `make bench` pipes into it.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// goal is a bound on one ratio metric of the benchmarks whose name matches bench.
type goal struct {
	bench  *regexp.Regexp
	metric string
	atMost bool // the ratio must be at most limit (else at least)
	limit  float64
}

func re(s string) *regexp.Regexp { return regexp.MustCompile(s) }

var goals = []goal{
	{re(`^BenchmarkDurableCreate/clients=1$`), "ratio-to-F", false, 0.3},
	{re(`^BenchmarkDurableCreate/clients=32$`), "ratio-to-F", false, 3},
	{re(`^BenchmarkDurableCreate/clients=32$`), "ratio-to-store", false, 0.6},
	{re(`^BenchmarkDaemonCPU/`), "create-cpu-ratio", true, 1},
	{re(`^BenchmarkDaemonCPU/`), "get-cpu-ratio", true, 1},
	{re(`^BenchmarkStartup10k$`), "startup-ratio", true, 3},
	{re(`^BenchmarkStartup10k$`), "first-list-ratio", true, 2},
	{re(`^BenchmarkListStreaming$`), "ratio", true, 1.5},
	{re(`^BenchmarkGetRoundTrip$`), "p50-ratio", true, 3},
	{re(`^BenchmarkTenants/tenants=1000$`), "setup-ratio", true, 1.2},
	{re(`^BenchmarkTenants/tenants=1000$`), "flatness", true, 1.3},
	{re(`^BenchmarkAddRootFS$`), "add/git-ratio", true, 1.5},
	{re(`^BenchmarkAddRootFS$`), "rss-over-bound-ratio", true, 1},
}

// isRatio says whether a metric unit is a ratio the table should show.
func isRatio(unit string) bool {
	return strings.Contains(unit, "ratio") || strings.HasPrefix(unit, "x_") || strings.HasSuffix(unit, "flatness")
}

type key struct{ pkg, bench, metric string }

func main() {
	values := map[key][]float64{}
	var order []key
	failed := false
	pkg := ""
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL"):
			failed = true
		case strings.HasPrefix(line, "Benchmark"):
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			name := f[0]
			if i := strings.LastIndexByte(name, '-'); i > 0 {
				if _, err := strconv.Atoi(name[i+1:]); err == nil {
					name = name[:i] // the GOMAXPROCS suffix
				}
			}
			// f[1] is the iteration count; then value-unit pairs.
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil || !isRatio(f[i+1]) {
					continue
				}
				k := key{pkg, name, f[i+1]}
				if _, ok := values[k]; !ok {
					order = append(order, k)
				}
				values[k] = append(values[k], v)
			}
		}
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(2)
	}
	fmt.Println()
	fmt.Println("Summary: each ratio over the runs (min / median / max), against its goal")
	fmt.Printf("%-52s %-20s %5s %9s %9s %9s %8s %s\n", "benchmark", "ratio", "runs", "min", "median", "max", "goal", "")
	missed := 0
	for _, k := range order {
		vs := slices.Clone(values[k])
		slices.Sort(vs)
		med := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
		}
		g, verdict := "-", ""
		for _, gl := range goals {
			if gl.metric != k.metric || !gl.bench.MatchString(k.bench) {
				continue
			}
			ok := med >= gl.limit
			g = fmt.Sprintf(">= %g", gl.limit)
			if gl.atMost {
				ok = med <= gl.limit
				g = fmt.Sprintf("<= %g", gl.limit)
			}
			verdict = "met"
			if !ok {
				verdict = "MISSED"
				missed++
			}
		}
		name := strings.TrimPrefix(k.pkg, "github.com/bitbuilder/bitbuilder/") + " " + strings.TrimPrefix(k.bench, "Benchmark")
		fmt.Printf("%-52s %-20s %5d %9.3g %9.3g %9.3g %8s %s\n", name, k.metric, len(vs), vs[0], med, vs[len(vs)-1], g, verdict)
	}
	fmt.Printf("%d goals missed\n", missed)
	if failed {
		os.Exit(1)
	}
}
