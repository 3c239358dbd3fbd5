package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/varlink/go/varlink"
)

// The command-line conventions people bring from git, kubectl and incus: "did you mean"
// suggestions, GNU-style flag names in errors, errors that name the flag a value came from
// rather than the API field it went to, and errors as JSON for scripts.

// suggest returns the candidates closest to word: those within a small edit distance
// (a third of the word's length, at least 1 and at most 3), or that word is a prefix of,
// nearest first. It returns nothing when no candidate is close.
func suggest(word string, candidates []string) []string {
	limit := min(max(len(word)/3, 1), 3)
	type scored struct {
		s string
		d int
	}
	var hits []scored
	for _, c := range candidates {
		if c == word {
			continue
		}
		d := editDistance(word, c)
		if len(word) >= 2 && strings.HasPrefix(c, word) {
			d = min(d, 1)
		}
		if d <= limit {
			hits = append(hits, scored{c, d})
		}
	}
	slices.SortStableFunc(hits, func(a, b scored) int { return a.d - b.d })
	var out []string
	for _, h := range hits {
		if !slices.Contains(out, h.s) {
			out = append(out, h.s)
		}
	}
	return out
}

// editDistance is the Damerau-Levenshtein distance (optimal string alignment): insertions,
// deletions, substitutions and transpositions of neighbours each cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// didYouMean is the hint for a mistyped word: `; did you mean "list"?`, or "" when nothing
// is close.
func didYouMean(word string, candidates []string, quote func(string) string) string {
	s := suggest(word, candidates)
	if len(s) == 0 {
		return ""
	}
	if len(s) > 3 {
		s = s[:3]
	}
	q := make([]string, len(s))
	for i, c := range s {
		q[i] = quote(c)
	}
	if len(q) == 1 {
		return "; did you mean " + q[0] + "?"
	}
	return "; did you mean " + strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1] + "?"
}

var (
	// The messages of package flag, which spells flags with one dash.
	flagUndefined = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	flagNeedsArg  = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
	flagName      = regexp.MustCompile(`(flag|argument:) -+([A-Za-z0-9][A-Za-z0-9-]*)`)
)

// flagError rewrites an error of fs.Parse in GNU style (--timeout, not -timeout) and adds a
// suggestion for an unknown flag.
func flagError(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if m := flagUndefined.FindStringSubmatch(msg); m != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		name, _, _ := strings.Cut(m[1], "=")
		return "unknown flag --" + name + didYouMean(name, names, func(s string) string { return "--" + s })
	}
	if m := flagNeedsArg.FindStringSubmatch(msg); m != nil {
		return "flag --" + m[1] + " needs a value"
	}
	return flagName.ReplaceAllString(msg, "$1 --$2")
}

// jsonFlagGiven reports whether args ask for JSON output, before they are parsed (a command
// line that does not parse still gets its error as JSON).
func jsonFlagGiven(args []string) bool {
	given := false
	for _, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		// As when parsing, the last one counts.
		b, err := strconv.ParseBool(value)
		given = !hasValue || (err == nil && b)
	}
	return given
}

// errorJSON is how an error is printed with --json, on standard error: the Varlink error's
// name and parameters when the daemon replied with one, else a name of bbctl's
// (bbctl.UsageError, bbctl.DaemonUnreachable, ...), and the message bbctl prints without
// --json.
type errorJSON struct {
	Error      string         `json:"error"`
	Parameters map[string]any `json:"parameters"`
	Message    string         `json:"message"`
}

// asErrorJSON describes err for errorJSON.
func asErrorJSON(err error) errorJSON {
	out := errorJSON{Parameters: map[string]any{}, Message: err.Error()}
	var (
		ue *UsageError
		re *RemoteError
		ve *ValidationError
		we *WaitError
		le *localError
	)
	switch {
	case errors.As(err, &ue):
		out.Error = "bbctl.UsageError"
		if ue.Command != "" {
			out.Parameters["command"] = ue.Command
		}
	case errors.As(err, &le):
		out.Error = le.name
		if le.params != nil {
			out.Parameters = le.params
		}
	case errors.As(err, &re) && re.Varlink != "":
		out.Error = re.Varlink
		out.Parameters = errorParameters(re.Cause)
	case errors.As(err, &re):
		switch {
		case errors.Is(err, ErrUnreachable):
			out.Error = "bbctl.DaemonUnreachable"
		case errors.Is(err, ErrPermission):
			out.Error = "bbctl.PermissionDenied"
		case errors.Is(re.Cause, errTimeout):
			out.Error = "bbctl.Timeout"
		default:
			out.Error = "bbctl.Failure"
		}
	case errors.As(err, &ve):
		out.Error = "bbctl.ValidationFailed"
		out.Parameters["errors"] = ve.Errors
	case errors.As(err, &we):
		out.Error = "bbctl.WaitFailed"
		out.Parameters["tenant"] = we.Tenant
		out.Parameters["reason"] = we.Reason
	default:
		out.Error = "bbctl.Failure"
	}
	return out
}

// errTimeout marks a call that ran out of time, for errorJSON.
var errTimeout = errors.New("timed out")

// errorParameters returns the parameters of a Varlink error as the daemon sent them.
func errorParameters(cause error) map[string]any {
	out := map[string]any{}
	var b []byte
	var ve *varlink.Error
	if errors.As(cause, &ve) {
		if raw, ok := ve.Parameters.(*json.RawMessage); ok && raw != nil {
			b = *raw
		}
	} else if cause != nil {
		b, _ = json.Marshal(cause)
	}
	if len(b) > 0 {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

// localError is a refusal of bbctl's own (the daemon was asked nothing that changes state),
// with a name and parameters for --json and the exit code of its kind.
type localError struct {
	kind    error
	name    string
	params  map[string]any
	message string
}

func (e *localError) Error() string        { return e.message }
func (e *localError) Is(target error) bool { return e.kind != nil && target == e.kind }

// printError prints err once to w: "bbctl: message" for people, one errorJSON line with
// --json.
func printError(w io.Writer, err error, asJSON bool) {
	if asJSON {
		b, merr := json.Marshal(asErrorJSON(err))
		if merr == nil {
			fmt.Fprintf(w, "%s\n", b)
			return
		}
	}
	fmt.Fprintf(w, "bbctl: %s\n", err)
}

// fieldFlags maps the API fields the daemon names in errors to the flags and arguments of
// bbctl that set them, so that an error says "--memory", not "resources.memoryBytes".
// Fields of list elements ("templates[1].role") map by their list ("templates").
var fieldFlags = map[string]string{
	"name":                     "NAME",
	"networkIndex":             "--index",
	"resources":                "--cpus, --memory and --storage",
	"resources.cpus":           "--cpus",
	"resources.memoryBytes":    "--memory",
	"resources.storageBytes":   "--storage",
	"templates":                "--template",
	"parameters":               "--param",
	"networkFeatures":          "--network-features",
	"machines":                 "--machine",
	"desiredState":             "--stopped",
	"expectedRevision":         "--revision",
	"revision":                 "--revision",
	"url":                      "URL",
	"ref":                      "--ref",
	"commit":                   "COMMIT",
	"path":                     "PATH",
	"type":                     "--type",
	"base":                     "--base",
	"architecture":             "--arch",
	"publicKey":                "--public-key",
	"endpoint":                 "--endpoint",
	"allowedIPs":               "--allowed-ips",
	"allowedIps":               "--allowed-ips",
	"persistentKeepalive":      "--keepalive",
	"keepalive":                "--keepalive",
	"peer":                     "--public-key, --endpoint, --allowed-ips and --keepalive",
	"peer.publicKey":           "--public-key",
	"peer.endpoint":            "--endpoint",
	"peer.allowedIPs":          "--allowed-ips",
	"peer.persistentKeepalive": "--keepalive",
	"peers":                    "--public-key",
}

// elementParts names the parts of a --template or --machine value by the API fields they
// set, as the flags' help spells them.
var elementParts = map[string]map[string]string{
	"templates": {"role": "ROLE", "name": "NAME", "template": "TEMPLATE"},
	"machines":  {"name": "NAME", "kind": "KIND", "template": "TEMPLATE", "cpus": "cpus=", "memoryBytes": "memory=", "desiredState": ":stopped"},
}

var fieldElement = regexp.MustCompile(`^([A-Za-z]+)\[(\d+)\]\.?(.*)$`)

// flagForField says which flag or argument set field, for messages: "--memory",
// "--template (value 2, role)", "--param K". It returns field itself when no flag sets it.
func flagForField(field string) string {
	if f, ok := fieldFlags[field]; ok {
		return f
	}
	if m := fieldElement.FindStringSubmatch(field); m != nil {
		if f, ok := fieldFlags[m[1]]; ok {
			n, _ := strconv.Atoi(m[2])
			s := fmt.Sprintf("%s (value %d", f, n+1)
			if part := m[3]; part != "" {
				if p, ok := elementParts[m[1]][part]; ok {
					part = p
				}
				s += ", " + part
			}
			return s + ")"
		}
	}
	if k, ok := strings.CutPrefix(field, "parameters."); ok {
		return "--param " + k
	}
	if head, rest, ok := strings.Cut(field, "."); ok {
		if f, ok := fieldFlags[head]; ok {
			return f + " (" + rest + ")"
		}
	}
	return field
}
