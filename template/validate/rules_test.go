package validate

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// TestEveryRuleIsTested checks that the rule table is in order, and that every rule is the expected finding of
// at least one test case in this package.
func TestEveryRuleIsTested(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	expected := map[string]bool{}
	re := regexp.MustCompile(`(?:rule: |\{"[^"]*", \[\]node\{.*\}, |policy: )"([A-FHX][0-9]{1,2}|DC)"|"([A-FHX][0-9]{1,2}):(?:error|warning|info)"`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			expected[m[1]+m[2]] = true
		}
	}
	t.Logf("%d rule ids expected by test cases", len(expected))
	rules := Rules()
	if !slices.IsSortedFunc(rules, func(a, b RuleInfo) int { return compareRule(a.ID, b.ID) }) {
		t.Error("Rules() is not in rule order")
	}
	for _, r := range rules {
		if !expected[r.ID] {
			t.Errorf("rule %s (%s) is not the expected finding of any test case", r.ID, r.Title)
		}
		if len(r.Severities) == 0 || r.Title == "" || r.Explanation == "" {
			t.Errorf("rule %s: incomplete entry", r.ID)
		}
	}
}
