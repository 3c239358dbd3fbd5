package cli

import (
	"context"
	"flag"
	"fmt"
	"time"
)

// commands returns every bbctl command, in help order.
func commands() []*command {
	var all []*command
	all = append(all, tenantCommands()...)
	all = append(all, machineCommands()...)
	all = append(all, userCommands()...)
	all = append(all, templateCommands()...)
	all = append(all, templateInfoCommands()...)
	all = append(all, networkCommands()...)
	all = append(all, miscCommands()...)
	all = append(all, manCommand())
	return all
}

// versionReply is `bbctl version --json`.
type versionReply struct {
	Client string      `json:"client"`
	Daemon *daemonInfo `json:"daemon"`
}

type daemonInfo struct {
	Vendor     string   `json:"vendor"`
	Product    string   `json:"product"`
	Version    string   `json:"version"`
	URL        string   `json:"url"`
	Interfaces []string `json:"interfaces"`
}

// versionProbe bounds how long `bbctl version` waits for the daemon.
const versionProbe = 2 * time.Second

func miscCommands() []*command {
	return []*command{
		{
			path: "version", maxArgs: 0,
			summary: "print bbctl's version and the daemon's, when it is reachable",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					out := versionReply{Client: e.app.Version}
					var derr error
					pctx, cancel := context.WithTimeout(ctx, versionProbe)
					defer cancel()
					if c, err := e.connect(pctx); err != nil {
						derr = err
					} else {
						var d daemonInfo
						if err := c.GetInfo(pctx, &d.Vendor, &d.Product, &d.Version, &d.URL, &d.Interfaces); err != nil {
							derr = e.wrap(err, "org.varlink.service.GetInfo")
						} else {
							out.Daemon = &d
						}
					}
					if e.g.json {
						return printJSON(e.stdout(), out)
					}
					fmt.Fprintf(e.stdout(), "bbctl %s\n", out.Client)
					if out.Daemon != nil {
						fmt.Fprintf(e.stdout(), "%s %s (%s)\n", out.Daemon.Product, out.Daemon.Version, out.Daemon.Vendor)
					} else {
						fmt.Fprintf(e.stdout(), "daemon: %v\n", derr)
					}
					return nil
				}
			},
		},
		{
			path: "completion", args: "bash|zsh|fish", minArgs: 1, maxArgs: 1, offline: true,
			summary: "print a shell completion script",
			long: `bash:  source <(bbctl completion bash)
zsh:   bbctl completion zsh > "${fpath[1]}/_bbctl"
fish:  bbctl completion fish > ~/.config/fish/completions/bbctl.fish
Tenant, machine and template names are completed by asking the daemon (bbctl __complete).`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					script, err := completionScript(args[0], commands())
					if err != nil {
						return usagef("completion", "%v", err)
					}
					_, err = fmt.Fprint(e.stdout(), script)
					return err
				}
			},
		},
		{
			path: "help", args: "[COMMAND]", maxArgs: -1, offline: true,
			summary: "show help for bbctl or a command",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					return e.app.help(commands(), args)
				}
			},
		},
		{
			path: "__complete", args: "tenants|templates|machines [TENANT]", minArgs: 1, maxArgs: 2, hidden: true,
			summary: "print names for shell completion",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					// Completion must stay quiet and quick: errors print nothing.
					ctx, cancel := context.WithTimeout(ctx, versionProbe)
					defer cancel()
					var tenant string
					if len(args) == 2 {
						tenant = args[1]
					}
					for _, n := range e.completeNames(ctx, args[0], tenant) {
						fmt.Fprintln(e.stdout(), n)
					}
					return nil
				}
			},
		},
	}
}
