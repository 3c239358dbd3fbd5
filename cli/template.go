package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/varlink/go/varlink"

	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
)

// validateReply is what template validate --json prints: the reply parameters of Validate.
type validateReply struct {
	Findings            []vm.Finding `json:"findings"`
	Errors              int64        `json:"errors"`
	Warnings            int64        `json:"warnings"`
	Compatible          *bool        `json:"compatible,omitempty"`
	CompatibilityReason *string      `json:"compatibilityReason,omitempty"`
}

func templateCommands() []*command {
	return []*command{
		{
			path: "template add", args: "NAME URL [--ref REF]", minArgs: 2, maxArgs: 2, stream: true,
			summary: "fetch a template repository, validate it and pin it",
			long: `URL is a local path, file://, https://, ssh:// or git:// URL; a relative local path is made
absolute. Progress goes to standard error: a bar on a terminal, plain lines otherwise.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				ref := fs.String("ref", "", "the branch, tag or commit to follow (default: the remote's default branch)")
				return func(ctx context.Context, e *env, args []string) error {
					var refPtr *string
					if *ref != "" {
						refPtr = ref
					}
					url := localURL(args[1])
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					recv, err := vm.Add().Send(ctx, c, varlink.More, args[0], url, refPtr)
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Add")
					}
					return e.followFetch(ctx, recv, "io.bitbuilder.Template.Add", "added")
				}
			},
		},
		{
			path: "template update", args: "NAME", minArgs: 1, maxArgs: 1, stream: true,
			summary: "fetch a template again and move the pin when the new commit validates",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					recv, err := vm.Update().Send(ctx, c, varlink.More, args[0])
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Update")
					}
					return e.followFetch(ctx, recv, "io.bitbuilder.Template.Update", "updated")
				}
			},
		},
		{
			path: "template pin", args: "NAME COMMIT", minArgs: 2, maxArgs: 2,
			summary: "pin a template to a fetched commit, for example to roll back",
			long: `COMMIT is a full commit id or, as in git, a unique prefix of at least 4 hex digits of one
of the commits the template was pinned to (template get lists them; template list prints
the first 12 digits of the current one). A prefix that matches several is refused, listing
them. A commit fetched but never pinned needs its full id.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					commit := args[1]
					if !isFullCommit(commit) {
						cur, err := vm.Get().Call(ctx, c, args[0])
						if err != nil {
							return e.wrap(err, "io.bitbuilder.Template.Get")
						}
						if commit, err = resolveCommit(cur, args[1]); err != nil {
							return err
						}
					}
					t, err := vm.Pin().Call(ctx, c, args[0], commit)
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Pin")
					}
					if e.g.json {
						return printJSON(e.stdout(), t)
					}
					_, err = fmt.Fprintf(e.stdout(), "template %q pinned to %s\n", t.Name, t.Commit)
					return err
				}
			},
		},
		{
			path: "template get", args: "NAME [NAME...]", minArgs: 1, maxArgs: -1,
			summary: "show templates",
			long: `Given several names, bbctl shows each in turn (with --json: an array of them) and reports
each failure; the exit code is the first failure's.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					now := e.app.Now()
					return getEach(e, args, func(name string) (vm.Template, error) {
						t, err := vm.Get().Call(ctx, c, name)
						return t, e.wrap(err, "io.bitbuilder.Template.Get")
					}, func(w io.Writer, t vm.Template) error {
						printTemplate(w, now, t)
						return nil
					})
				}
			},
		},
		{
			path: "template list", aliases: []string{"ls"}, maxArgs: 0,
			summary: "list the templates in the registry",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					ts, err := e.listTemplates(ctx)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout(), ts)
					}
					return printTemplateTable(e.stdout(), ts)
				}
			},
		},
		{
			path: "template remove", aliases: []string{"rm"}, args: "NAME [NAME...]", minArgs: 1, maxArgs: -1,
			summary: "remove templates that no tenant uses",
			long: `Given several names, bbctl removes each in turn and reports each failure; the exit code is
the first failure's. With --json a removal prints nothing.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					f := failures{w: e.stderr(), several: len(args) > 1, json: e.g.json}
					for _, name := range args {
						if err := vm.Remove().Call(ctx, c, name); err != nil {
							f.add(e.wrap(err, "io.bitbuilder.Template.Remove"))
							continue
						}
						if !e.g.json {
							fmt.Fprintf(e.stdout(), "template %q removed\n", name)
						}
					}
					return f.err()
				}
			},
		},
		{
			path: "template validate", args: "PATH|NAME [--type T] [--base ROOTFS] [--arch ARCH]", minArgs: 1, maxArgs: 1,
			summary: "validate a template directory or a registered template",
			long: `The argument is a path when it contains '/' or '.', or names an existing directory; otherwise it
is the name of a template in the registry. Findings are listed by severity with rule, path and
message. The exit code is 0 when no errors were found and 1 when some were.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				typ := fs.String("type", "", "the template `type`, for a directory without metadata.json")
				base := fs.String("base", "", "a root file system `ROOTFS` whose os-release an extension is checked against")
				arch := fs.String("arch", "", "the target architecture, a systemd architecture id (default: the host's)")
				return func(ctx context.Context, e *env, args []string) error {
					var name, path *string
					if isPathArg(args[0]) {
						p, err := filepath.Abs(args[0])
						if err != nil {
							return usagef("template validate", "%v", err)
						}
						path = &p
					} else {
						name = &args[0]
					}
					var basePtr *string
					if *base != "" {
						b, err := filepath.Abs(*base)
						if err != nil {
							return usagef("template validate", "invalid value for flag --base: %v", err)
						}
						basePtr = &b
					}
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					recv, err := vm.Validate().Send(ctx, c, 0, name, path, optString(*typ), basePtr, optString(*arch))
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Validate")
					}
					var r validateReply
					r.Findings, r.Errors, r.Warnings, r.Compatible, r.CompatibilityReason, _, err = recv(ctx)
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Validate")
					}
					if r.Findings == nil {
						r.Findings = []vm.Finding{}
					}
					if e.g.json {
						err = printJSON(e.stdout(), r)
					} else {
						err = printValidation(e.stdout(), r, deref(basePtr))
					}
					if err != nil {
						return err
					}
					if r.Errors > 0 {
						return &ValidationError{Errors: int(r.Errors)}
					}
					return nil
				}
			},
		},
	}
}

// minCommitPrefix is the shortest commit prefix template pin accepts, as git's.
const minCommitPrefix = 4

func isFullCommit(s string) bool { return len(s) == 40 && isHex(s) }

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

// resolveCommit turns a commit prefix into the one commit of t (its pin and the commits
// pinned before) that starts with it.
func resolveCommit(t vm.Template, prefix string) (string, error) {
	p := strings.ToLower(prefix)
	if !isHex(p) || len(p) < minCommitPrefix || len(p) > 40 {
		return "", usagef("template pin", "invalid COMMIT %q: want a commit id or a prefix of %d to 40 hex digits", prefix, minCommitPrefix)
	}
	var matches []string
	for _, c := range append([]string{t.Commit}, t.PreviousCommits...) {
		if strings.HasPrefix(c, p) && !slices.Contains(matches, c) {
			matches = append(matches, c)
		}
	}
	params := map[string]any{"name": t.Name, "commit": prefix}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		known := []string{shortCommit(t.Commit) + " (pinned)"}
		for _, c := range t.PreviousCommits {
			known = append(known, shortCommit(c))
		}
		return "", &localError{kind: ErrNotFound, name: "bbctl.NoSuchCommit", params: params,
			message: fmt.Sprintf("template %q has no pinned or previously pinned commit starting with %s (known: %s); give the full id of another fetched commit", t.Name, prefix, strings.Join(known, ", "))}
	default:
		params["matches"] = matches
		return "", &localError{kind: ErrInvalid, name: "bbctl.AmbiguousCommit", params: params,
			message: fmt.Sprintf("commit prefix %s of template %q is ambiguous: it matches %s", prefix, t.Name, strings.Join(matches, ", "))}
	}
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// isPathArg reports whether a validate argument is a path rather than a template name.
func isPathArg(s string) bool {
	if strings.ContainsAny(s, "/.") {
		return true
	}
	fi, err := os.Stat(s)
	return err == nil && fi.IsDir()
}

// localURL makes a relative local repository path absolute, since the daemon resolves paths
// in its own working directory. URLs and scp-like addresses pass unchanged.
func localURL(u string) string {
	if strings.Contains(u, "://") || filepath.IsAbs(u) {
		return u
	}
	if _, err := os.Stat(u); err != nil {
		return u
	}
	if abs, err := filepath.Abs(u); err == nil {
		return abs
	}
	return u
}

// followFetch reads the replies of Add or Update: progress until the final template.
func (e *env) followFetch(ctx context.Context, recv func(context.Context) (*vm.Progress, *vm.Template, uint64, error), method, verb string) error {
	p := newProgress(e.stderr(), e.app.StderrIsTerminal())
	for {
		pr, t, flags, err := recv(ctx)
		if err != nil {
			p.finish()
			return e.wrap(err, method)
		}
		if pr != nil {
			p.update(*pr)
		}
		if t != nil {
			p.finish()
			if e.g.json {
				return printJSON(e.stdout(), *t)
			}
			_, err = fmt.Fprintf(e.stdout(), "template %q %s: %s %s at %s\n", t.Name, verb, t.Type, t.Version, shortCommit(t.Commit))
			return err
		}
		if flags&varlink.Continues == 0 {
			p.finish()
			return fmt.Errorf("%s ended without a template", method)
		}
	}
}

func printTemplateTable(w io.Writer, ts []vm.Template) error {
	tb := newTable(w, "NAME", "TYPE", "VERSION", "COMMIT", "REF", "USED BY", "URL")
	for _, t := range ts {
		tb.row(t.Name, t.Type, t.Version, shortCommit(t.Commit), t.Ref, strings.Join(t.UsedBy, ","), t.Url)
	}
	return tb.flush()
}

func printTemplate(w io.Writer, now time.Time, t vm.Template) {
	kv(w, "Name", t.Name)
	kv(w, "Type", t.Type)
	kv(w, "Version", t.Version)
	kv(w, "URL", t.Url)
	kv(w, "Ref", t.Ref)
	kv(w, "Commit", t.Commit)
	kv(w, "Added", formatTime(now, t.AddedAt))
	kv(w, "Updated", formatTime(now, t.UpdatedAt))
	if len(t.UsedBy) == 0 {
		kv(w, "Used by", "none")
	} else {
		kv(w, "Used by", strings.Join(t.UsedBy, ", "))
	}
	if len(t.PreviousCommits) == 0 {
		kv(w, "Previous", "none")
		return
	}
	fmt.Fprintln(w, "Previous:")
	for _, c := range t.PreviousCommits {
		fmt.Fprintf(w, "  %s\n", c)
	}
}

// severities in the order validate prints them.
var severities = []string{"error", "warning", "info"}

func printValidation(w io.Writer, r validateReply, base string) error {
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "No findings.")
	}
	var other []vm.Finding
	for _, sev := range severities {
		var group []vm.Finding
		for _, f := range r.Findings {
			if f.Severity == sev {
				group = append(group, f)
			}
		}
		if len(group) > 0 {
			if err := printFindingGroup(w, sev, group); err != nil {
				return err
			}
		}
	}
	for _, f := range r.Findings {
		if f.Severity != "error" && f.Severity != "warning" && f.Severity != "info" {
			other = append(other, f)
		}
	}
	if len(other) > 0 {
		if err := printFindingGroup(w, "other", other); err != nil {
			return err
		}
	}
	if r.Compatible != nil {
		verdict := "no"
		if *r.Compatible {
			verdict = "yes"
		}
		if reason := deref(r.CompatibilityReason); reason != "" {
			verdict += ": " + reason
		}
		fmt.Fprintf(w, "Compatible with %s: %s\n", base, verdict)
	}
	_, err := fmt.Fprintf(w, "%d %s, %d %s\n", r.Errors, plural(int(r.Errors), "error", "errors"), r.Warnings, plural(int(r.Warnings), "warning", "warnings"))
	return err
}

func printFindingGroup(w io.Writer, sev string, fs []vm.Finding) error {
	title := map[string]string{"error": "Errors", "warning": "Warnings", "info": "Info", "other": "Other"}[sev]
	fmt.Fprintf(w, "%s (%d):\n", title, len(fs))
	tb := indentTable(w, "RULE", "PATH", "MESSAGE")
	for _, f := range fs {
		tb.row(f.Rule, f.Path, f.Message)
	}
	return tb.flush()
}

// findingLines formats findings for an error message (ValidationFailed).
func findingLines(fs []vm.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", f.Severity, f.Rule, f.Path, f.Message)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// listTemplates collects the replies of Template.List; no templates is an empty list.
func (e *env) listTemplates(ctx context.Context) ([]vm.Template, error) {
	c, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	recv, err := vm.List().Send(ctx, c, varlink.More)
	if err != nil {
		return nil, e.wrap(err, "io.bitbuilder.Template.List")
	}
	out := []vm.Template{}
	for {
		t, flags, err := recv(ctx)
		if err != nil {
			if isEmptyList(err) {
				return out, nil
			}
			return nil, e.wrap(err, "io.bitbuilder.Template.List")
		}
		out = append(out, t)
		if flags&varlink.Continues == 0 {
			return out, nil
		}
	}
}
