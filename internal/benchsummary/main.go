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
	{re(`^BenchmarkRootFS50k$`), "x-walk", true, 3},
	{re(`^BenchmarkAddRootFS$`), "rss-over-bound-ratio", true, 1},
}

// isCount says whether s is a benchmark's iteration count.
func isCount(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// continuation says whether line carries a split benchmark line's figures: an iteration count
// and value-unit pairs, indented.
func continuation(line string) bool {
	f := strings.Fields(line)
	return len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && len(f) >= 3 && isCount(f[0])
}

// isRatio says whether a metric unit is a ratio the table should show.
func isRatio(unit string) bool {
	return strings.Contains(unit, "ratio") || strings.HasPrefix(unit, "x_") || strings.HasPrefix(unit, "x-") || strings.HasSuffix(unit, "flatness")
}

type key struct{ pkg, bench, metric string }

func main() {
	failed, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// summarize copies `go test -bench` output from in to out, then writes the table; it says
// whether a test failed.
func summarize(in io.Reader, out io.Writer) (failed bool, err error) {
	values := map[key][]float64{}
	var order []key
	pkg := ""
	pending := "" // a benchmark whose figures have not come yet
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL"):
			failed = true
		case strings.HasPrefix(line, "Benchmark") || pending != "" && continuation(line):
			f := strings.Fields(line)
			if !strings.HasPrefix(line, "Benchmark") {
				// The figures of a benchmark whose line something else (a child
				// process's log) split: they follow on a line of their own.
				f = append([]string{pending}, f...)
			}
			pending = ""
			if len(f) < 4 || !isCount(f[1]) {
				pending = f[0]
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
		return false, err
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Summary: each ratio over the runs (min / median / max), against its goal")
	fmt.Fprintf(out, "%-52s %-20s %5s %9s %9s %9s %8s %s\n", "benchmark", "ratio", "runs", "min", "median", "max", "goal", "")
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
		fmt.Fprintf(out, "%-52s %-20s %5d %9.3g %9.3g %9.3g %8s %s\n", name, k.metric, len(vs), vs[0], med, vs[len(vs)-1], g, verdict)
	}
	fmt.Fprintf(out, "%d goals missed\n", missed)
	return failed, nil
}
