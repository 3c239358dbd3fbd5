package validate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Severity of a finding.
type Severity string

// Severities, as the spec defines them.
const (
	// SeverityError is a spec MUST, or systemd refuses or ignores the image. A template with an error is never
	// instantiated.
	SeverityError Severity = "error"
	// SeverityWarning is a SHOULD, or content that has no effect.
	SeverityWarning Severity = "warning"
	// SeverityInfo is informational.
	SeverityInfo Severity = "info"
)

// Finding is one rule violation (or note) found in a tree.
type Finding struct {
	// Rule is the stable rule identifier (see the package documentation), e.g. "A1" or "D27".
	Rule string `json:"rule"`
	// Severity of the finding.
	Severity Severity `json:"severity"`
	// Path is the slash-separated path the finding is about, relative to the validated tree's root.
	Path string `json:"path"`
	// Message says what is wrong and how to fix it.
	Message string `json:"message"`
}

// String formats the finding as "path: severity RULE: message".
func (f Finding) String() string {
	return fmt.Sprintf("%s: %s %s: %s", f.Path, f.Severity, f.Rule, f.Message)
}

// Report is the result of a validation: its findings, sorted by path, rule, severity and message.
type Report struct {
	Findings []Finding `json:"findings"`
}

// With returns the report with more findings (found by a checker outside this package, such as the daemon's
// check of parameters.json), in the report's order.
func (r Report) With(more ...Finding) Report {
	fs := append(slices.Clone(r.Findings), more...)
	sortFindings(fs)
	return Report{Findings: slices.Compact(fs)}
}

// HasErrors reports whether the report has at least one finding of severity error.
func (r Report) HasErrors() bool {
	return slices.ContainsFunc(r.Findings, func(f Finding) bool { return f.Severity == SeverityError })
}

// Errors returns the findings of severity error.
func (r Report) Errors() []Finding { return r.bySeverity(SeverityError) }

// Warnings returns the findings of severity warning.
func (r Report) Warnings() []Finding { return r.bySeverity(SeverityWarning) }

// Infos returns the findings of severity info.
func (r Report) Infos() []Finding { return r.bySeverity(SeverityInfo) }

// Rules returns the distinct rule identifiers of the findings, in sorted order.
func (r Report) Rules() []string {
	var ids []string
	for _, f := range r.Findings {
		ids = append(ids, f.Rule)
	}
	slices.SortFunc(ids, compareRule)
	return slices.Compact(ids)
}

func (r Report) bySeverity(s Severity) []Finding {
	out := []Finding{}
	for _, f := range r.Findings {
		if f.Severity == s {
			out = append(out, f)
		}
	}
	return out
}

// collector accumulates findings during a validation.
type collector struct {
	findings []Finding
	prefix   string // prepended to every path, e.g. "rootfs/"
}

func (c *collector) add(rule string, sev Severity, path, format string, args ...any) {
	c.findings = append(c.findings, Finding{Rule: rule, Severity: sev, Path: c.join(path), Message: fmt.Sprintf(format, args...)})
}

func (c *collector) errorf(rule, path, format string, args ...any) {
	c.add(rule, SeverityError, path, format, args...)
}

func (c *collector) warnf(rule, path, format string, args ...any) {
	c.add(rule, SeverityWarning, path, format, args...)
}

func (c *collector) infof(rule, path, format string, args ...any) {
	c.add(rule, SeverityInfo, path, format, args...)
}

// addAll adds findings whose paths are relative to path (used for release-file syntax findings).
func (c *collector) addAll(path string, fs []Finding) {
	for _, f := range fs {
		f.Path = c.join(path)
		c.findings = append(c.findings, f)
	}
}

func (c *collector) join(path string) string {
	if path == "" || path == "." {
		if c.prefix == "" {
			return "."
		}
		return strings.TrimSuffix(c.prefix, "/")
	}
	return c.prefix + path
}

// sub returns a collector sharing nothing that prefixes paths with p.
func (c *collector) sub(p string) *collector {
	return &collector{prefix: c.join(p) + "/"}
}

func (c *collector) merge(o *collector) { c.findings = append(c.findings, o.findings...) }

func (c *collector) report() Report {
	fs := c.findings
	if fs == nil {
		fs = []Finding{}
	}
	sortFindings(fs)
	return Report{Findings: slices.Compact(fs)}
}

func sortFindings(fs []Finding) {
	slices.SortFunc(fs, func(a, b Finding) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		if c := compareRule(a.Rule, b.Rule); c != 0 {
			return c
		}
		if c := strings.Compare(string(a.Severity), string(b.Severity)); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
}

// compareRule orders rule ids by letter, then number: A2 < A10 < B11.
func compareRule(a, b string) int {
	la, na := splitRule(a)
	lb, nb := splitRule(b)
	if c := strings.Compare(la, lb); c != 0 {
		return c
	}
	if na != nb {
		if na < nb {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

func splitRule(r string) (string, int) {
	i := strings.IndexFunc(r, func(c rune) bool { return c >= '0' && c <= '9' })
	if i < 0 {
		return r, -1
	}
	n, err := strconv.Atoi(r[i:])
	if err != nil {
		return r, -1
	}
	return r[:i], n
}
