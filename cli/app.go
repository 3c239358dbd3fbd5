package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/varlink/go/varlink"
)

// DefaultAddress is the daemon's socket when neither --address nor $BITBUILDER_ADDRESS is set.
const DefaultAddress = "unix:/run/bitbuilder/io.bitbuilder"

// DefaultTimeout bounds calls when --timeout is not given. Streams (tenant watch, template add
// and update) have no default bound; commands given --wait have DefaultWaitTimeout.
const DefaultTimeout = 30 * time.Second

// DefaultWaitTimeout bounds a command given --wait (tenant create, start, stop and delete,
// machine start, stop and restart) when --timeout is not given.
const DefaultWaitTimeout = 5 * time.Minute

// DefaultFailGrace is how long a failure that a tenant already showed when a --wait began is
// given to clear before the wait fails on it (see App.FailGrace).
const DefaultFailGrace = 5 * time.Second

// App is one invocation environment of bbctl. The zero value of each field takes its default.
type App struct {
	// Stdin, Stdout and Stderr default to the process's. Stdin is read by
	// `network add-peer --public-key -`.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// Now returns the time, for ages (default time.Now).
	Now func() time.Time
	// StderrIsTerminal reports whether progress may be drawn as a bar (default: whether
	// Stderr is a terminal).
	StderrIsTerminal func() bool
	// Version is bbctl's version.
	Version string
	// LookPath finds a program in PATH (default exec.LookPath), and Exec replaces bbctl with
	// it (default syscall.Exec): `machine shell` runs machinectl so.
	LookPath func(file string) (string, error)
	Exec     func(argv0 string, argv, envv []string) error
	// FailGrace is how long a failure already present in the reply a --wait starts from
	// (phase failed, a machine failed) may take to clear: the daemon may not have acted on
	// the call yet. A failure in a later change ends the wait at once. Default
	// DefaultFailGrace.
	FailGrace time.Duration
}

// Run runs bbctl with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	return a.Run(ctx, args)
}

func (a *App) defaults() {
	if a.Stdin == nil {
		a.Stdin = os.Stdin
	}
	if a.Stdout == nil {
		a.Stdout = os.Stdout
	}
	if a.Stderr == nil {
		a.Stderr = os.Stderr
	}
	if a.Getenv == nil {
		a.Getenv = os.Getenv
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.StderrIsTerminal == nil {
		w := a.Stderr
		a.StderrIsTerminal = func() bool { return isTerminal(w) }
	}
	if a.Version == "" {
		a.Version = "0.1.0-dev"
	}
	if a.LookPath == nil {
		a.LookPath = exec.LookPath
	}
	if a.Exec == nil {
		a.Exec = syscall.Exec
	}
	if a.FailGrace == 0 {
		a.FailGrace = DefaultFailGrace
	}
}

// Run runs bbctl with args (without the program name), prints any error once to Stderr, and
// returns the exit code. With --json the error is one JSON object on Stderr (errorJSON).
func (a *App) Run(ctx context.Context, args []string) int {
	a.defaults()
	asJSON := jsonFlagGiven(args)
	err := a.run(ctx, args)
	if err == nil {
		return ExitOK
	}
	var ue *UsageError
	var ve *ValidationError
	var re *reportedError
	switch {
	case errors.As(err, &re):
		// Each failure was printed as it happened.
	case asJSON:
		printError(a.Stderr, err, true)
	case errors.As(err, &ue):
		fmt.Fprintf(a.Stderr, "bbctl: %s\n", ue.Message)
		hint := "bbctl help"
		if ue.Command != "" {
			hint += " " + ue.Command
		}
		fmt.Fprintf(a.Stderr, "Run '%s' for usage.\n", hint)
	case errors.As(err, &ve):
		// The findings were printed already.
	default:
		printError(a.Stderr, err, false)
	}
	return ExitCode(err)
}

// globals are the flags every command takes.
type globals struct {
	address string
	json    bool
	timeout time.Duration
	version bool
}

func (g *globals) register(fs *flag.FlagSet, defaultAddress string) {
	fs.StringVar(&g.address, "address", defaultAddress, "the daemon's address `ADDR`: unix:/path or a path (default $BITBUILDER_ADDRESS, else "+DefaultAddress+")")
	fs.BoolVar(&g.json, "json", g.json, "print the reply as JSON (lists as an array, streams as JSON lines)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "give up after `D`, for example 10s (default 30s; 5m with --wait; none for streams)")
	fs.BoolVar(&g.version, "version", g.version, "print bbctl's version and exit")
}

// globalFlags are the names globals registers.
var globalFlags = []string{"address", "json", "timeout", "version"}

// printVersion is --version, on any command.
func (a *App) printVersion(asJSON bool) error {
	if asJSON {
		return printJSON(a.Stdout, map[string]string{"client": a.Version})
	}
	_, err := fmt.Fprintf(a.Stdout, "bbctl %s\n", a.Version)
	return err
}

// env is what a command runs with.
type env struct {
	app  *App
	g    *globals
	conn *varlink.Connection
	addr string
}

func (e *env) stdout() io.Writer { return e.app.Stdout }
func (e *env) stderr() io.Writer { return e.app.Stderr }

// normalizeAddress turns --address into a Varlink address.
func normalizeAddress(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("empty address")
	case strings.HasPrefix(s, "unix:"):
		if len(s) == len("unix:") {
			return "", fmt.Errorf("address %q has no path", s)
		}
		return s, nil
	case strings.HasPrefix(s, "/"), strings.HasPrefix(s, "."), !strings.Contains(s, ":"):
		return "unix:" + s, nil
	default:
		return "", fmt.Errorf("address %q: only unix:/path or a path are supported", s)
	}
}

// socketPath is the file system path of a unix: address, for messages.
func socketPath(addr string) string {
	p := strings.TrimPrefix(addr, "unix:")
	if i := strings.IndexByte(p, ';'); i >= 0 {
		p = p[:i]
	}
	return p
}

// connect dials the daemon once per command; the connection is used by one goroutine only.
func (e *env) connect(ctx context.Context) (*varlink.Connection, error) {
	if e.conn != nil {
		return e.conn, nil
	}
	c, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	e.conn = c
	return c, nil
}

// close closes the command's connection, if any.
func (e *env) close() {
	if e.conn != nil {
		e.conn.Close()
		e.conn = nil
	}
}

// dial opens a connection of its own, for a stream that may be left unfinished (a wait);
// the caller closes it.
func (e *env) dial(ctx context.Context) (*varlink.Connection, error) {
	c, err := varlink.NewConnection(ctx, e.addr)
	if err != nil {
		return nil, transportError(err, socketPath(e.addr))
	}
	return c, nil
}

// bound applies the default timeout when --timeout was not given: DefaultWaitTimeout with
// --wait, DefaultTimeout without. It is for commands marked stream, whose --wait decides.
func (e *env) bound(ctx context.Context, wait bool) (context.Context, context.CancelFunc) {
	if e.g.timeout != 0 {
		return ctx, func() {}
	}
	if wait {
		return context.WithTimeout(ctx, DefaultWaitTimeout)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// waitTimeout is the bound of a --wait, for messages.
func (e *env) waitTimeout() time.Duration {
	if e.g.timeout != 0 {
		return e.g.timeout
	}
	return DefaultWaitTimeout
}

// wrap turns an error of a call of method into bbctl's typed error.
func (e *env) wrap(err error, method string) error {
	return fromCall(err, method, socketPath(e.addr))
}

// command is one bbctl command.
type command struct {
	// path is the command words, for example "tenant create".
	path string
	// aliases are other last words the command answers to, for example "ls" for "list".
	aliases []string
	// args describes the positional arguments in the usage line.
	args string
	// summary is one line for command lists; long is printed by help.
	summary, long string
	// minArgs and maxArgs bound the positional arguments (maxArgs -1: any).
	minArgs, maxArgs int
	// stream: no default timeout.
	stream bool
	// offline: the command does not need the daemon.
	offline bool
	// hidden commands are not listed by help.
	hidden bool
	// setup registers the command's own flags and returns the function that runs it.
	setup func(fs *flag.FlagSet) func(ctx context.Context, e *env, args []string) error
}

// groups are the command groups with their one-line descriptions, in help order.
var groupSummaries = []struct{ name, summary string }{
	{"tenant", "create, inspect, change and delete tenants"},
	{"machine", "list, start, stop and restart tenants' machines, and open a shell in one"},
	{"template", "manage the template registry and validate templates"},
	{"network", "inspect tenant networks and manage WireGuard peers"},
}

func (a *App) run(ctx context.Context, args []string) error {
	cmds := commands()
	defAddr := a.Getenv("BITBUILDER_ADDRESS")
	if defAddr == "" {
		defAddr = DefaultAddress
	}
	var g globals

	// Global flags may come before the command words.
	top := flag.NewFlagSet("bbctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top, defAddr)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return a.help(cmds, nil)
		}
		return usagef("", "%s", flagError(top, err))
	}
	rest := top.Args()
	if len(rest) == 0 {
		if g.version {
			return a.printVersion(g.json)
		}
		a.printOverview(a.Stderr, cmds)
		return &UsageError{Message: "no command given"}
	}

	// Find the longest command path that matches the words.
	var cmd *command
	var words int
	for i := range cmds {
		for _, path := range cmds[i].paths() {
			p := strings.Fields(path)
			if len(p) <= len(rest) && equalWords(p, rest[:len(p)]) && len(p) > words {
				cmd, words = cmds[i], len(p)
			}
		}
	}
	if cmd == nil {
		return a.noCommand(cmds, &g, rest)
	}

	fs := flag.NewFlagSet("bbctl "+cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// Flags given before the command words keep their values as defaults.
	g.register(fs, g.address)
	runFn := cmd.setup(fs)
	pos, err := parseInterspersed(fs, rest[words:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(a.Stdout, cmd, fs)
			return nil
		}
		return usagef(cmd.path, "%s", flagError(fs, err))
	}
	if g.version {
		return a.printVersion(g.json)
	}
	if len(pos) < cmd.minArgs || (cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs) {
		return usagef(cmd.path, "usage: %s", strings.TrimSpace("bbctl "+cmd.path+" "+cmd.args))
	}
	if g.timeout < 0 {
		return usagef(cmd.path, "invalid value %q for flag --timeout: must not be negative", g.timeout)
	}

	e := &env{app: a, g: &g}
	if !cmd.offline {
		addr, err := normalizeAddress(g.address)
		if err != nil {
			return usagef(cmd.path, "invalid value for flag --address: %v", err)
		}
		e.addr = addr
	}
	timeout := g.timeout
	if timeout == 0 && !cmd.stream {
		timeout = DefaultTimeout
	}
	if timeout > 0 && !cmd.offline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	defer e.close()
	return runFn(ctx, e, pos)
}

// noCommand handles words that name no command: a group alone or with its --help or
// --version, or a mistyped word, with a suggestion.
func (a *App) noCommand(cmds []*command, g *globals, rest []string) error {
	if isGroup(rest[0]) {
		// The group's own flags: --help, --version (and the global ones).
		fs := flag.NewFlagSet("bbctl "+rest[0], flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		g.register(fs, g.address)
		subArgs, err := parseInterspersed(fs, rest[1:])
		switch {
		case errors.Is(err, flag.ErrHelp):
			a.printGroup(a.Stdout, cmds, rest[0])
			return nil
		case err != nil:
			// The command word is the first mistake to report, when there is one.
			subArgs = nil
			for _, w := range rest[1:] {
				if !strings.HasPrefix(w, "-") {
					subArgs = append(subArgs, w)
					break
				}
			}
			if len(subArgs) == 0 {
				return usagef(rest[0], "%s", flagError(fs, err))
			}
		case len(subArgs) == 0 && g.version:
			return a.printVersion(g.json)
		case len(subArgs) == 0:
			a.printGroup(a.Stderr, cmds, rest[0])
			return &UsageError{Command: rest[0], Message: fmt.Sprintf("%s: no subcommand given", rest[0])}
		}
		var subs []string
		for _, c := range cmds {
			// Aliases are not suggested: their command is.
			if grp, sub, ok := strings.Cut(c.path, " "); ok && grp == rest[0] && !c.hidden {
				subs = append(subs, sub)
			}
		}
		return usagef(rest[0], "unknown command %q%s", rest[0]+" "+subArgs[0],
			didYouMean(subArgs[0], subs, func(s string) string { return strconv.Quote(rest[0] + " " + s) }))
	}
	var tops []string
	for _, gs := range groupSummaries {
		tops = append(tops, gs.name)
	}
	for _, c := range cmds {
		if !c.hidden && !strings.Contains(c.path, " ") {
			tops = append(tops, c.path)
		}
	}
	return usagef("", "unknown command %q%s", rest[0], didYouMean(rest[0], tops, strconv.Quote))
}

// paths returns the command's path and its aliases' paths.
func (c *command) paths() []string {
	out := []string{c.path}
	head := c.path[:strings.LastIndexByte(c.path, ' ')+1]
	for _, a := range c.aliases {
		out = append(out, head+a)
	}
	return out
}

func equalWords(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func isGroup(w string) bool {
	for _, g := range groupSummaries {
		if g.name == w {
			return true
		}
	}
	return false
}

// parseInterspersed parses flags that may come before, between or after positional
// arguments; "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// printCommandHelp prints a command's usage and flags.
func printCommandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n", strings.TrimSpace("bbctl "+cmd.path+" "+cmd.args))
	fmt.Fprintln(w, strings.ToUpper(cmd.summary[:1])+cmd.summary[1:]+".")
	if paths := cmd.paths(); len(paths) > 1 {
		fmt.Fprintf(w, "Also: bbctl %s.\n", strings.Join(paths[1:], ", bbctl "))
	}
	if cmd.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.long))
	}
	var own, global []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		switch {
		case slices.Contains(globalFlags, f.Name):
			global = append(global, f)
		default:
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, own)
	}
	fmt.Fprintln(w, "\nGlobal flags:")
	printFlags(w, global)
}

func printFlags(w io.Writer, flags []*flag.Flag) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range flags {
		name, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(interface{ IsBoolFlag() bool }); ok {
			name = ""
		}
		if name != "" {
			name = " " + name
		}
		fmt.Fprintf(tw, "  --%s%s\t%s\n", f.Name, name, usage)
	}
	tw.Flush()
}

const exitCodeHelp = `Exit codes:
  0  success
  1  failure (also: template validate found errors, a --wait failed or timed out)
  2  usage error (bad flags or arguments; the daemon was not contacted)
  3  not found (no such tenant, machine, template, peer or ref)
  4  invalid name, field, parameter or metadata
  5  permission denied (writes need root or the daemon's admin group)
  6  daemon unreachable (socket missing, connection refused or lost)
  7  conflict (exists already, network index or machine name in use, revision mismatch, template in use,
     a running tenant deleted without --force)
`

func (a *App) printOverview(w io.Writer, cmds []*command) {
	fmt.Fprintln(w, "bbctl controls bitbuilderd, the BitBuilder host daemon.")
	fmt.Fprintln(w, "\nUsage: bbctl [--address ADDR] [--json] [--timeout D] [--version] COMMAND [ARGS]")
	fmt.Fprintln(w, "Run 'bbctl help COMMAND' or 'bbctl COMMAND -h' for a command's arguments and flags.")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	group := "-"
	for _, c := range cmds {
		if c.hidden {
			continue
		}
		g, _, ok := strings.Cut(c.path, " ")
		if !ok {
			g = ""
		}
		if g != group {
			group = g
			title := "Other commands:"
			if g != "" {
				title = strings.ToUpper(g[:1]) + g[1:] + " commands:"
			}
			fmt.Fprintf(tw, "\n%s\n", title)
		}
		fmt.Fprintf(tw, "  %s\t%s\n", c.path, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nGlobal flags (before or after the command):")
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var g globals
	g.register(fs, DefaultAddress)
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	printFlags(w, flags)
	fmt.Fprintln(w)
	fmt.Fprint(w, exitCodeHelp)
}

func (a *App) printGroup(w io.Writer, cmds []*command, group string) {
	for _, g := range groupSummaries {
		if g.name == group {
			fmt.Fprintf(w, "bbctl %s: %s.\n\nCommands:\n", g.name, g.summary)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range cmds {
		if strings.HasPrefix(c.path, group+" ") && !c.hidden {
			fmt.Fprintf(tw, "  bbctl %s %s\t%s\n", c.path, c.args, c.summary)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// help implements `bbctl help [COMMAND...]`.
func (a *App) help(cmds []*command, words []string) error {
	if len(words) == 0 {
		a.printOverview(a.Stdout, cmds)
		return nil
	}
	joined := strings.Join(words, " ")
	for _, c := range cmds {
		if slices.Contains(c.paths(), joined) {
			fs := flag.NewFlagSet(c.path, flag.ContinueOnError)
			var g globals
			g.register(fs, DefaultAddress)
			c.setup(fs)
			printCommandHelp(a.Stdout, c, fs)
			return nil
		}
	}
	if len(words) == 1 && isGroup(words[0]) {
		a.printGroup(a.Stdout, cmds, words[0])
		return nil
	}
	return usagef("", "no such command %q", joined)
}
