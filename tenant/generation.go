package tenant

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Generation returns the generation of an encoded tenant record (0 when it has none) without
// decoding the rest of it: the reconciler asks it of every change it is told of, to tell the
// status writes (which leave it) from the changes a pass must act on. ok is false when value is
// not a JSON object.
//
// The record is scanned once at the top level: strings (escapes included) and nested values are
// skipped, so a key "generation" inside the parameters or a machine is never taken for the
// record's own. Anything the scan does not expect (it reads what encoding/json writes: compact,
// no white space) is left to encoding/json. For valid JSON the answer is encoding/json's
// (FuzzGeneration); a value that is not valid JSON may get an answer where encoding/json gives an
// error, which is harmless for a hint: the pass that decodes the record reports it.
func Generation(value []byte) (gen int64, ok bool) {
	if g, ok, sure := scanGeneration(value); sure {
		return g, ok
	}
	var v struct {
		Generation int64 `json:"generation"`
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return 0, false
	}
	return v.Generation, true
}

var generationKey = []byte(`"generation"`)

// scanGeneration is Generation's fast path over compact JSON; sure is false when value is
// anything else (white space, a repeated or case-folded key, a malformed record), and the
// caller asks encoding/json instead.
func scanGeneration(b []byte) (gen int64, ok, sure bool) {
	if len(b) < 2 || b[0] != '{' {
		return 0, false, false
	}
	found := false
	i := 1
	if b[i] == '}' {
		return 0, i+1 == len(b), i+1 == len(b)
	}
	for {
		// A key: a string, then ':'.
		end := skipString(b, i)
		if end < 0 || end >= len(b) || b[end] != ':' {
			return 0, false, false
		}
		key := b[i:end]
		i = end + 1
		switch {
		case bytes.IndexByte(key, '\\') >= 0:
			return 0, false, false // encoding/json matches the key after decoding its escapes
		case bytes.Equal(key, generationKey):
			if found {
				return 0, false, false // repeated: encoding/json takes the last; let it
			}
			j := i
			if j < len(b) && b[j] == '-' {
				j++
			}
			d := j
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			if j == d || j-d > 1 && b[d] == '0' {
				return 0, false, false // not a JSON integer
			}
			n, err := strconv.ParseInt(string(b[i:j]), 10, 64)
			if err != nil {
				return 0, false, false
			}
			gen, found, i = n, true, j
		case !ascii(key) || len(key) == len(generationKey) && bytes.EqualFold(key, generationKey):
			return 0, false, false // encoding/json matches keys ignoring case (Unicode folding)
		default:
			if i = skipValue(b, i); i < 0 {
				return 0, false, false
			}
		}
		if i >= len(b) {
			return 0, false, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			if i+1 != len(b) {
				return 0, false, false
			}
			return gen, true, true
		default:
			return 0, false, false
		}
	}
}

// skipString returns the index after the JSON string that starts at b[i], or -1.
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the compact JSON value that starts at b[i], or -1. Nested
// objects and arrays are skipped by counting brackets outside strings; numbers and literals up
// to the next delimiter. Its result only needs to be right for valid compact JSON: the caller
// checks what follows, and encoding/json has the last word on anything else.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default:
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']':
				return i
			case ' ', '\t', '\n', '\r':
				return -1
			}
		}
		return -1
	}
}

// ascii reports whether b has only ASCII bytes (then no case folding changes its length).
func ascii(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
