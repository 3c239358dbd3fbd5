package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// printJSON prints v indented, as one JSON document.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// printJSONLine prints v as one line (JSON lines, for streams).
func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// table collects rows and prints them aligned.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row prints one row. A cell of several lines (a condition's message) goes on over the next
// lines, in its own column, the other columns left blank there, so the table stays aligned.
func (t *table) row(cells ...string) {
	lines := make([][]string, len(cells))
	n := 1
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		lines[i] = strings.Split(strings.TrimRight(strings.ReplaceAll(c, "\t", " "), "\n"), "\n")
		n = max(n, len(lines[i]))
	}
	for l := range n {
		row := make([]string, len(cells))
		for i := range cells {
			if l < len(lines[i]) {
				row[i] = lines[i][l]
			}
		}
		fmt.Fprintln(t.tw, strings.Join(row, "\t"))
	}
}

func (t *table) flush() error { return t.tw.Flush() }

// indentTable is a table printed under a key of a key: value block.
func indentTable(w io.Writer, header ...string) *table {
	return newTable(&prefixWriter{w: w, prefix: "  ", bol: true}, header...)
}

// prefixWriter writes prefix at the start of every line.
type prefixWriter struct {
	w      io.Writer
	prefix string
	bol    bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	var out []byte
	for _, c := range b {
		if p.bol {
			out = append(out, p.prefix...)
			p.bol = false
		}
		out = append(out, c)
		if c == '\n' {
			p.bol = true
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// kv prints one "Key: value" line of a block, values aligned.
func kv(w io.Writer, key, value string) {
	if value == "" {
		value = "-"
	}
	fmt.Fprintf(w, "%-16s%s\n", key+":", value)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
