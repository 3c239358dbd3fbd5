package names

import (
	"errors"
	"strings"
	"testing"
)

// The rule itself: each way a name can break it gives its own Rule, character and position, and the reason says
// so; good labels pass.
func TestCheckLabel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rule   Rule
		char   rune
		pos    int
		reason string
	}{
		{name: "a"},
		{name: "acme-prod"},
		{name: "0"},
		{name: "a--b"},
		{name: "x1y2z3"},
		{name: strings.Repeat("a", 63)},
		{name: "", rule: Empty, reason: "empty; a name is 1 to 63 characters"},
		{name: strings.Repeat("a", 64), rule: TooLong, reason: "64 characters, longer than 63"},
		{name: "ab\xff", rule: InvalidUTF8, reason: "not valid UTF-8"},
		{name: "-a", rule: EdgeHyphen, char: '-', pos: 0, reason: "must start and end with a letter or digit"},
		{name: "a-", rule: EdgeHyphen, char: '-', pos: 1, reason: "must start and end with a letter or digit"},
		{name: "-", rule: EdgeHyphen, char: '-', pos: 0},
		{name: "aB", rule: UpperCase, char: 'B', pos: 1, reason: "upper-case letter 'B' at position 1; use lower case"},
		{name: "a_b", rule: BadCharacter, char: '_', pos: 1, reason: "character '_' at position 1; only a-z, 0-9 and '-' are allowed"},
		{name: "a.b", rule: BadCharacter, char: '.', pos: 1},
		{name: "../x", rule: BadCharacter, char: '.', pos: 0},
		{name: "a/b", rule: BadCharacter, char: '/', pos: 1},
		{name: "a b", rule: BadCharacter, char: ' ', pos: 1},
		{name: "é", rule: BadCharacter, char: 'é', pos: 0},
		{name: "ab\x00", rule: BadCharacter, char: 0, pos: 2},
		{name: "a\nb", rule: BadCharacter, char: '\n', pos: 1},
		// The first broken rule wins: length before characters, an edge hyphen before a later bad character.
		{name: strings.Repeat("A", 64), rule: TooLong},
		{name: "-A", rule: EdgeHyphen, char: '-', pos: 0},
	} {
		err := CheckLabel(tc.name)
		if tc.rule == 0 {
			if err != nil {
				t.Errorf("CheckLabel(%q) = %v, want nil", tc.name, err)
			}
			continue
		}
		var le *LabelError
		if !errors.As(err, &le) {
			t.Errorf("CheckLabel(%q) = %v, want a *LabelError", tc.name, err)
			continue
		}
		if le.Rule != tc.rule || le.Char != tc.char || le.Pos != tc.pos || le.Name != tc.name {
			t.Errorf("CheckLabel(%q) = %+v, want rule %d, char %q at %d", tc.name, le, tc.rule, tc.char, tc.pos)
		}
		if tc.reason != "" && le.Reason() != tc.reason {
			t.Errorf("CheckLabel(%q) reason %q, want %q", tc.name, le.Reason(), tc.reason)
		}
		if !strings.HasPrefix(le.Error(), `"`) || !strings.HasSuffix(le.Error(), le.Reason()) {
			t.Errorf("CheckLabel(%q).Error() = %q: want the quoted name and the reason", tc.name, le.Error())
		}
	}
}
