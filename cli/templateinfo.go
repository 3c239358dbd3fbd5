package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
)

// template params and template rules read what the daemon says about its templates and its validator:
// Template.Get's parameters (what the pinned commit's parameters.json declares) and Template.Rules (the
// validator's catalogue, the same table its findings name).

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
					t, err := vm.Get().Call(ctx, c, args[0])
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Get")
					}
					params := t.Parameters
					if params == nil {
						params = []vm.Parameter{}
					}
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
					// Every rule, also for one: an unknown id gets the ids close to it.
					rules, err := vm.Rules().Call(ctx, c, nil)
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Template.Rules")
					}
					if rules == nil {
						rules = []vm.Rule{}
					}
					if len(args) == 0 {
						if e.g.json {
							return printJSON(e.stdout(), rules)
						}
						return printRules(e.stdout(), rules)
					}
					r, err := findRule(rules, args[0])
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
func findRule(rules []vm.Rule, id string) (vm.Rule, error) {
	var ids []string
	for _, r := range rules {
		if strings.EqualFold(r.Id, id) {
			return r, nil
		}
		ids = append(ids, r.Id)
	}
	return vm.Rule{}, &localError{kind: ErrNotFound, name: "bbctl.NoSuchRule", params: map[string]any{"rule": id},
		message: fmt.Sprintf("the validator has no rule %q%s (bbctl template rules lists them)", id,
			didYouMean(strings.ToUpper(id), ids, func(s string) string { return s }))}
}

// paramDefault is how a parameter's default is shown: "(required)" for one a tenant must give, "" for one
// without a default that only tenants with its network feature need.
func paramDefault(p vm.Parameter) string {
	switch {
	case p.Default != nil && *p.Default == "":
		return `""`
	case p.Default != nil:
		return *p.Default
	case p.Required && p.Feature != nil:
		return "(required with " + *p.Feature + ")"
	case p.Required:
		return "(required)"
	}
	return ""
}

func printParams(w io.Writer, params []vm.Parameter) error {
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

func printRules(w io.Writer, rules []vm.Rule) error {
	tb := newTable(w, "RULE", "SEVERITY", "SUMMARY")
	for _, r := range rules {
		tb.row(r.Id, strings.Join(r.Severities, ","), r.Title)
	}
	return tb.flush()
}

func printRule(w io.Writer, r vm.Rule) {
	kv(w, "Rule", r.Id)
	kv(w, "Severities", strings.Join(r.Severities, ", "))
	kv(w, "Summary", r.Title)
	if d := r.Explanation; d != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(d))
	}
	if slices.Contains(r.Severities, "error") {
		fmt.Fprintln(w, "\nAn error finding keeps the template from being pinned.")
	}
}
