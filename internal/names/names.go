// Package names holds the one rule for the names BitBuilder derives host objects from (tenants, templates,
// template uses: namespaces, units, directories and links are named after them): a lower-case hostname label
// (RFC 1123), 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit.
//
// Every package that accepts such a name checks it with CheckLabel and keeps only its own context (which field,
// which error type); none re-implements the rule. It is a leaf on the standard library.
package names

import (
	"fmt"
	"unicode/utf8"
)

// MaxLabelLength is the longest label: one DNS label.
const MaxLabelLength = 63

// Rule is the part of the rule a name breaks.
type Rule int

// The parts of the rule, in the order CheckLabel checks them.
const (
	Empty        Rule = iota + 1 // no characters
	InvalidUTF8                  // not valid UTF-8
	TooLong                      // more than MaxLabelLength bytes
	EdgeHyphen                   // '-' first or last
	UpperCase                    // an upper-case ASCII letter
	BadCharacter                 // any other character outside a-z, 0-9 and '-'
)

// LabelError is a name that is not a lower-case hostname label: which rule it breaks and, for a character, which
// and where (the byte offset).
type LabelError struct {
	Name string
	Rule Rule
	Char rune // UpperCase, BadCharacter, EdgeHyphen
	Pos  int  // UpperCase, BadCharacter, EdgeHyphen: byte offset of Char in Name
}

// Reason says what is wrong, without the name, for callers that show the name themselves.
func (e *LabelError) Reason() string {
	switch e.Rule {
	case Empty:
		return fmt.Sprintf("empty; a name is 1 to %d characters", MaxLabelLength)
	case InvalidUTF8:
		return "not valid UTF-8"
	case TooLong:
		return fmt.Sprintf("%d characters, longer than %d", len(e.Name), MaxLabelLength)
	case EdgeHyphen:
		return "must start and end with a letter or digit"
	case UpperCase:
		return fmt.Sprintf("upper-case letter %q at position %d; use lower case", e.Char, e.Pos)
	case BadCharacter:
		return fmt.Sprintf("character %q at position %d; only a-z, 0-9 and '-' are allowed", e.Char, e.Pos)
	}
	return "not a lower-case hostname label"
}

func (e *LabelError) Error() string { return fmt.Sprintf("%q: %s", e.Name, e.Reason()) }

// CheckLabel returns nil when name is a lower-case hostname label, and otherwise a *LabelError naming the first
// rule it breaks.
func CheckLabel(name string) error {
	fail := func(r Rule, c rune, pos int) error { return &LabelError{Name: name, Rule: r, Char: c, Pos: pos} }
	switch {
	case name == "":
		return fail(Empty, 0, 0)
	case !utf8.ValidString(name):
		return fail(InvalidUTF8, 0, 0)
	case len(name) > MaxLabelLength:
		return fail(TooLong, 0, 0)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '-':
			if i == 0 || i == len(name)-1 {
				return fail(EdgeHyphen, r, i)
			}
		case r >= 'A' && r <= 'Z':
			return fail(UpperCase, r, i)
		default:
			return fail(BadCharacter, r, i)
		}
	}
	return nil
}
