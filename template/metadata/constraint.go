package metadata

import (
	"fmt"
	"strconv"
	"strings"
)

// Constraint is a conjunction of version comparisons, e.g. ">=257, <260".
type Constraint struct {
	Clauses []Clause
}

// Clause is one comparison.
type Clause struct {
	Op      string // ">=", ">", "<=", "<", "=="
	Version []int  // dotted components, e.g. 6.1 -> [6 1]
}

// ParseConstraint parses comparisons joined by commas. A bare "=" is read
// as "==".
func ParseConstraint(s string) (Constraint, error) {
	var c Constraint
	for part := range strings.SplitSeq(s, ",") {
		p := strings.TrimSpace(part)
		var op string
		for _, o := range []string{">=", "<=", "==", ">", "<", "="} {
			if strings.HasPrefix(p, o) {
				op = o
				break
			}
		}
		if op == "" {
			return Constraint{}, fmt.Errorf("constraint %q: clause %q must start with >=, >, <=, < or ==", s, p)
		}
		vs := strings.TrimSpace(p[len(op):])
		if !isDotted(vs) {
			return Constraint{}, fmt.Errorf("constraint %q: clause %q needs a dotted version number after %s", s, p, op)
		}
		v, err := ParseVersion(vs)
		if err != nil {
			return Constraint{}, fmt.Errorf("constraint %q: %w", s, err)
		}
		if op == "=" {
			op = "=="
		}
		c.Clauses = append(c.Clauses, Clause{Op: op, Version: v})
	}
	return c, nil
}

func isDotted(s string) bool {
	if s == "" {
		return false
	}
	for f := range strings.SplitSeq(s, ".") {
		if f == "" {
			return false
		}
		if _, err := strconv.Atoi(f); err != nil {
			return false
		}
	}
	return true
}

// ParseVersion reads the leading dotted numbers of a version or kernel
// release: "6.1.0-13-amd64" -> [6 1 0], "257.9-1" -> [257 9].
func ParseVersion(s string) ([]int, error) {
	var v []int
	rest := s
	for {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			break
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return nil, fmt.Errorf("version %q: %w", s, err)
		}
		v = append(v, n)
		rest = rest[i:]
		if len(rest) < 2 || rest[0] != '.' || rest[1] < '0' || rest[1] > '9' {
			break
		}
		rest = rest[1:]
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("version %q does not start with a number", s)
	}
	return v, nil
}

// Allows reports whether version v satisfies every clause. Missing
// components compare as 0 (6 == 6.0).
func (c Constraint) Allows(v []int) bool {
	for _, cl := range c.Clauses {
		r := compareVersions(v, cl.Version)
		ok := false
		switch cl.Op {
		case ">=":
			ok = r >= 0
		case ">":
			ok = r > 0
		case "<=":
			ok = r <= 0
		case "<":
			ok = r < 0
		case "==":
			ok = r == 0
		}
		if !ok {
			return false
		}
	}
	return true
}

func (c Constraint) String() string {
	parts := make([]string, len(c.Clauses))
	for i, cl := range c.Clauses {
		parts[i] = cl.Op + versionString(cl.Version)
	}
	return strings.Join(parts, ", ")
}

func compareVersions(a, b []int) int {
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionString(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ".")
}
