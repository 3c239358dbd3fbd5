package metadata

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every error Parse returns for a
// metadata.json that does not follow the schema or the semantic rules.
var ErrInvalid = errors.New("invalid metadata.json")

// ErrSchema is matched by errors from loading a JSON Schema that uses a
// keyword the checker does not implement, or is itself malformed.
var ErrSchema = errors.New("unsupported or malformed JSON Schema")

// FieldError is one violation, at a JSON path such as
// "$.requirements.features[1]".
type FieldError struct {
	// Path is the JSON path of the offending value ("$" is the document).
	Path string
	// Rule is the schema keyword or semantic rule that failed, e.g. "type",
	// "additionalProperties", "required", "enum", "pattern", "syntax".
	Rule string
	// Message says what is wrong and what was expected.
	Message string
}

func (e FieldError) Error() string {
	return e.Path + ": " + e.Message
}

// Error is returned by Parse: every violation found, in document order.
// It matches ErrInvalid.
type Error struct {
	Fields []FieldError
}

func (e *Error) Error() string {
	if len(e.Fields) == 1 {
		return "metadata.json: " + e.Fields[0].Error()
	}
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Error()
	}
	return fmt.Sprintf("metadata.json: %d problems: %s", len(e.Fields), strings.Join(msgs, "; "))
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }
