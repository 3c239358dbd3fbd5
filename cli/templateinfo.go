package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
)

// template params and template rules read what the daemon says about its templates and its
// validator. They call the methods by name and decode the replies into the types below, not
// through the generated bindings, because the daemon side (template parameters in
// io.bitbuilder.Template's Template, the rule catalogue method) is added beside them:
//
//   - template params NAME reads io.bitbuilder.Template.Get(name) and expects the reply's
//     template to carry "parameters": an array of templateParam. A reply without the field is a
//     daemon that does not report parameters (an error that says so).
//   - template rules [RULE] calls io.bitbuilder.Template.Rules() and expects {"rules": [...]},
//     an array of ruleInfo in rule order (the validator's catalogue, template/validate.Rules,
//     with an optional longer description).
//
// Once the IDL has them, the generated types can replace these.

// templateParam is one parameter a template declares.
type templateParam struct {
	Name        string          `json:"name"`
	Type        string          `json:"type"`
	Default     json.RawMessage `json:"default,omitempty"`
	Required    *bool           `json:"required,omitempty"`
	Description string          `json:"description"`
}

// ruleInfo is one rule of the validator's catalogue.
type ruleInfo struct {
	ID          string   `json:"id"`
	Severities  []string `json:"severities"`
	Summary     string   `json:"summary"`
	Description *string  `json:"description,omitempty"`
}

func templateInfoCommands() []*command {
	return []*command{
		{
			path: "template params", args: "NAME", minArgs: 1, maxArgs: 1,
			summary: "list the parameters a template takes: name, type, default and description",
			long: `A tenant's parameters (tenant create --param KEY=VALUE) are checked against the parameters its
templates declare. A parameter without a default must be given. With --json an array of the
parameter records.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					const method = "io.bitbuilder.Template.Get"
					var reply struct {
						Template struct {
							Name       string           `json:"name"`
							Parameters *[]templateParam `json:"parameters"`
						} `json:"template"`
					}
					if err := c.Call(ctx, method, map[string]string{"name": args[0]}, &reply); err != nil {
						return e.wrap(vm.Dispatch_Error(err), method)
					}
					if reply.Template.Parameters == nil {
						return fmt.Errorf("the daemon does not report template parameters (is it older than bbctl?)")
					}
					params := *reply.Template.Parameters
					if e.g.json {
						return printJSON(e.stdout(), params)
					}
					return printParams(e.stdout(), params)
				}
			},
		},
		{
			path: "template rules", args: "[RULE]", maxArgs: 1,
			summary: "show the validator's rules, or one rule in full",
			long: `Every finding of template validate names its rule (A1, D27, X2, ...). Without RULE, one line per
rule: its id, the severities its findings can have, and what it requires. With RULE, that rule
with its description. With --json an array of the rule records (with RULE: the record).`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					const method = "io.bitbuilder.Template.Rules"
					var reply struct {
						Rules []ruleInfo `json:"rules"`
					}
					if err := c.Call(ctx, method, struct{}{}, &reply); err != nil {
						return e.wrap(vm.Dispatch_Error(err), method)
					}
					if reply.Rules == nil {
						reply.Rules = []ruleInfo{}
					}
					if len(args) == 0 {
						if e.g.json {
							return printJSON(e.stdout(), reply.Rules)
						}
						return printRules(e.stdout(), reply.Rules)
					}
					r, err := findRule(reply.Rules, args[0])
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout(), r)
					}
					printRule(e.stdout(), r)
					return nil
				}
			},
		},
	}
}

// findRule finds a rule by id, case-insensitively; an unknown id is NotFound, with the ids
// close to it.
func findRule(rules []ruleInfo, id string) (ruleInfo, error) {
	var ids []string
	for _, r := range rules {
		if strings.EqualFold(r.ID, id) {
			return r, nil
		}
		ids = append(ids, r.ID)
	}
	return ruleInfo{}, &localError{kind: ErrNotFound, name: "bbctl.NoSuchRule", params: map[string]any{"rule": id},
		message: fmt.Sprintf("the validator has no rule %q%s (bbctl template rules lists them)", id,
			didYouMean(strings.ToUpper(id), ids, func(s string) string { return s }))}
}

// paramDefault is how a parameter's default is shown: a string as it is, other JSON values as
// JSON, "(required)" for a parameter without one that must be given.
func paramDefault(p templateParam) string {
	if len(p.Default) == 0 || string(p.Default) == "null" {
		if p.Required == nil || *p.Required {
			return "(required)"
		}
		return ""
	}
	var s string
	if json.Unmarshal(p.Default, &s) == nil {
		if s == "" {
			return `""`
		}
		return s
	}
	return string(p.Default)
}

func printParams(w io.Writer, params []templateParam) error {
	if len(params) == 0 {
		_, err := fmt.Fprintln(w, "The template takes no parameters.")
		return err
	}
	tb := newTable(w, "NAME", "TYPE", "DEFAULT", "DESCRIPTION")
	for _, p := range params {
		tb.row(p.Name, p.Type, paramDefault(p), p.Description)
	}
	return tb.flush()
}

func printRules(w io.Writer, rules []ruleInfo) error {
	tb := newTable(w, "RULE", "SEVERITY", "SUMMARY")
	for _, r := range rules {
		tb.row(r.ID, strings.Join(r.Severities, ","), r.Summary)
	}
	return tb.flush()
}

func printRule(w io.Writer, r ruleInfo) {
	kv(w, "Rule", r.ID)
	kv(w, "Severities", strings.Join(r.Severities, ", "))
	kv(w, "Summary", r.Summary)
	if d := deref(r.Description); d != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(d))
	}
	if slices.Contains(r.Severities, "error") {
		fmt.Fprintln(w, "\nAn error finding keeps the template from being pinned.")
	}
}
