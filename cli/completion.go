package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// argSpec says what the positional arguments of a command name, for completion: kinds[i]
// is the kind of argument i ("tenants", "templates", or "machines": the machines of the
// tenant in the first argument); with repeat the last kind goes on for every later argument.
type argSpec struct {
	kinds  []string
	repeat bool
}

// argNames returns the argSpec of a command path; a zero argSpec for commands whose
// arguments are not names.
func argNames(path string) argSpec {
	switch path {
	case "tenant update", "tenant watch",
		"network add-peer", "network remove-peer", "network describe", "network apply":
		return argSpec{kinds: []string{"tenants"}}
	case "tenant get", "tenant delete", "tenant start", "tenant stop", "machine list", "network get":
		return argSpec{kinds: []string{"tenants"}, repeat: true}
	case "machine start", "machine stop", "machine restart":
		return argSpec{kinds: []string{"tenants", "machines"}, repeat: true}
	case "machine shell":
		return argSpec{kinds: []string{"tenants", "machines"}}
	case "template update", "template pin", "template validate", "template params":
		return argSpec{kinds: []string{"templates"}}
	case "template get", "template remove":
		return argSpec{kinds: []string{"templates"}, repeat: true}
	}
	return argSpec{}
}

// completeNames lists tenant or template names, or the machine names of tenant, from the
// daemon; nothing on any error.
func (e *env) completeNames(ctx context.Context, kind, tenant string) []string {
	var names []string
	switch kind {
	case "tenants":
		ts, err := e.listTenants(ctx)
		if err != nil {
			return nil
		}
		for _, t := range ts {
			names = append(names, t.Name)
		}
	case "machines":
		c, err := e.connect(ctx)
		if err != nil {
			return nil
		}
		t, err := vt.Get().Call(ctx, c, tenant)
		if err != nil {
			return nil
		}
		for _, m := range t.Machines {
			names = append(names, m.Name)
		}
	case "templates":
		ts, err := e.listTemplates(ctx)
		if err != nil {
			return nil
		}
		for _, t := range ts {
			names = append(names, t.Name)
		}
	}
	return names
}

// completionInfo is what the scripts are generated from.
type completionInfo struct {
	top        []string            // first words: groups and plain commands
	subs       map[string][]string // group -> subcommands
	flags      map[string][]string // command path -> flags (with --)
	valueFlags []string            // flags that take a value, over all commands
	names      map[string]argSpec  // command path (aliases too) -> what its arguments name
	summaries  map[string]string
}

func gatherCompletion(cmds []*command) completionInfo {
	ci := completionInfo{subs: map[string][]string{}, flags: map[string][]string{}, names: map[string]argSpec{}, summaries: map[string]string{}}
	for _, g := range groupSummaries {
		ci.top = append(ci.top, g.name)
		ci.summaries[g.name] = g.summary
	}
	for _, c := range cmds {
		if c.hidden {
			continue
		}
		ci.summaries[c.path] = c.summary
		words := strings.Fields(c.path)
		if len(words) == 2 {
			ci.subs[words[0]] = append(ci.subs[words[0]], words[1])
		} else {
			ci.top = append(ci.top, words[0])
		}
		fs := flag.NewFlagSet(c.path, flag.ContinueOnError)
		var g globals
		g.register(fs, DefaultAddress)
		c.setup(fs)
		var flags []string
		fs.VisitAll(func(f *flag.Flag) {
			flags = append(flags, "--"+f.Name)
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				if !slices.Contains(ci.valueFlags, "--"+f.Name) {
					ci.valueFlags = append(ci.valueFlags, "--"+f.Name)
				}
			}
		})
		// An alias completes as its command, but is not offered as a subcommand.
		for _, p := range c.paths() {
			ci.flags[p] = flags
			if a := argNames(c.path); len(a.kinds) > 0 {
				ci.names[p] = a
			}
		}
	}
	slices.Sort(ci.valueFlags)
	return ci
}

// completionScript returns the completion script for shell.
func completionScript(shell string, cmds []*command) (string, error) {
	ci := gatherCompletion(cmds)
	switch shell {
	case "bash":
		return bashCompletion(ci), nil
	case "zsh":
		return zshCompletion(ci), nil
	case "fish":
		return fishCompletion(ci), nil
	}
	return "", fmt.Errorf("unknown shell %q: want bash, zsh or fish", shell)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// caseArms writes one shell case arm per command path, shared by bash and zsh.
func caseArms(b *strings.Builder, ci completionInfo, indent string, value func(path string) string) {
	for _, p := range sortedKeys(ci.flags) {
		fmt.Fprintf(b, "%s%q) %s ;;\n", indent, p, value(p))
	}
}

// nameArms writes one shell case arm per command path and argument position, matched
// against "PATH:N" (N counting arguments from 0), shared by bash and zsh.
func nameArms(b *strings.Builder, ci completionInfo, indent string, value func(kind string) string) {
	for _, p := range sortedKeys(ci.names) {
		a := ci.names[p]
		for i, k := range a.kinds {
			if a.repeat && i == len(a.kinds)-1 {
				fmt.Fprintf(b, "%s\"%s:\"*) %s ;;\n", indent, p, value(k))
			} else {
				fmt.Fprintf(b, "%s\"%s:%d\") %s ;;\n", indent, p, i, value(k))
			}
		}
	}
}

func bashCompletion(ci completionInfo) string {
	var b strings.Builder
	b.WriteString(`# bash completion for bbctl. Load with: source <(bbctl completion bash)

_bbctl_flags() {
    case "$1" in
`)
	caseArms(&b, ci, "        ", func(p string) string { return "echo " + strings.Join(ci.flags[p], " ") })
	b.WriteString(`        *) echo --address --json --timeout ;;
    esac
}

_bbctl_subcommands() {
    case "$1" in
`)
	for _, g := range sortedKeys(ci.subs) {
		fmt.Fprintf(&b, "        %s) echo %s ;;\n", g, strings.Join(ci.subs[g], " "))
	}
	b.WriteString(`    esac
}

_bbctl_names() {
    # What argument $2 (from 0) of command $1 names.
    case "$1:$2" in
`)
	nameArms(&b, ci, "        ", func(k string) string { return "echo " + k })
	b.WriteString(`    esac
}

_bbctl() {
    local cur prev i w cmd="" sub="" first="" nargs=0
    local -a addr=()
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev=""
    if ((COMP_CWORD > 0)); then
        prev="${COMP_WORDS[COMP_CWORD-1]}"
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            --address|-address)
                addr=(--address "${COMP_WORDS[i+1]}")
                ((i++))
                continue
                ;;
`)
	fmt.Fprintf(&b, "            %s)\n", strings.Join(ci.valueFlags, "|"))
	b.WriteString(`                ((i++))
                continue
                ;;
            -*) continue ;;
        esac
        if [[ -z "$cmd" ]]; then
            cmd="$w"
        elif [[ -z "$sub" && -n "$(_bbctl_subcommands "$cmd")" ]]; then
            sub="$w"
        else
            ((nargs == 0)) && first="$w"
            ((nargs++))
        fi
    done
    local path="$cmd"
    [[ -n "$sub" ]] && path="$cmd $sub"

    case "$prev" in
        --address) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
`)
	fmt.Fprintf(&b, "        %s) return 0 ;;\n", strings.Join(ci.valueFlags, "|"))
	b.WriteString(`    esac

    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_bbctl_flags "$path")" -- "$cur"))
        return 0
    fi
    if [[ -z "$cmd" ]]; then
`)
	fmt.Fprintf(&b, "        COMPREPLY=($(compgen -W %q -- \"$cur\"))\n", strings.Join(ci.top, " "))
	b.WriteString(`        return 0
    fi
    local subs
    subs="$(_bbctl_subcommands "$cmd")"
    if [[ -n "$subs" && -z "$sub" ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
        return 0
    fi
    case "$cmd" in
        completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return 0 ;;
`)
	fmt.Fprintf(&b, "        help) COMPREPLY=($(compgen -W %q -- \"$cur\")); return 0 ;;\n", strings.Join(ci.top, " "))
	b.WriteString(`    esac
    local kind
    kind="$(_bbctl_names "$path" "$nargs")"
    case "$kind" in
        machines) COMPREPLY=($(compgen -W "$(bbctl "${addr[@]}" __complete machines "$first" 2>/dev/null)" -- "$cur")) ;;
        ?*) COMPREPLY=($(compgen -W "$(bbctl "${addr[@]}" __complete "$kind" 2>/dev/null)" -- "$cur")) ;;
    esac
    if ((nargs == 0)) && [[ "$path" == "template validate" ]]; then
        COMPREPLY+=($(compgen -d -- "$cur"))
    fi
    return 0
}

complete -F _bbctl bbctl
`)
	return b.String()
}

func zshCompletion(ci completionInfo) string {
	var b strings.Builder
	b.WriteString(`#compdef bbctl
# zsh completion for bbctl. Install with: bbctl completion zsh > "${fpath[1]}/_bbctl"

_bbctl() {
    local -a flags subs names top
    local cmd="" sub="" first="" w cmdpath kind
    local -a addr
    integer i nargs=0
    for ((i = 2; i < CURRENT; i++)); do
        w="${words[i]}"
        case "$w" in
            --address|-address) addr=(--address "${words[i+1]}"); ((i++)); continue ;;
`)
	fmt.Fprintf(&b, "            %s) ((i++)); continue ;;\n", strings.Join(ci.valueFlags, "|"))
	b.WriteString(`            -*) continue ;;
        esac
        if [[ -z "$cmd" ]]; then
            cmd="$w"
`)
	var groups []string
	for _, g := range sortedKeys(ci.subs) {
		groups = append(groups, `"$cmd" == `+g)
	}
	fmt.Fprintf(&b, "        elif [[ -z \"$sub\" && ( %s ) ]]; then\n", strings.Join(groups, " || "))
	b.WriteString(`            sub="$w"
        else
            ((nargs == 0)) && first="$w"
            ((nargs++))
        fi
    done
    cmdpath="$cmd"
    [[ -n "$sub" ]] && cmdpath="$cmd $sub"

    case "${words[CURRENT-1]}" in
        --address) _files; return ;;
`)
	fmt.Fprintf(&b, "        %s) return ;;\n", strings.Join(ci.valueFlags, "|"))
	b.WriteString(`    esac

    if [[ "${words[CURRENT]}" == -* ]]; then
        case "$cmdpath" in
`)
	caseArms(&b, ci, "            ", func(p string) string { return "flags=(" + strings.Join(ci.flags[p], " ") + ")" })
	b.WriteString(`            *) flags=(--address --json --timeout) ;;
        esac
        compadd -- $flags
        return
    fi
    if [[ -z "$cmd" ]]; then
        top=(
`)
	for _, t := range ci.top {
		fmt.Fprintf(&b, "            %q\n", t+":"+ci.summaries[t])
	}
	b.WriteString(`        )
        _describe -t commands 'bbctl command' top
        return
    fi
    if [[ -z "$sub" ]]; then
        case "$cmd" in
`)
	for _, g := range sortedKeys(ci.subs) {
		fmt.Fprintf(&b, "            %s)\n                subs=(\n", g)
		for _, s := range ci.subs[g] {
			fmt.Fprintf(&b, "                    %q\n", s+":"+ci.summaries[g+" "+s])
		}
		b.WriteString("                )\n                _describe -t commands \"bbctl " + g + " command\" subs\n                return ;;\n")
	}
	b.WriteString(`            completion) compadd bash zsh fish; return ;;
`)
	fmt.Fprintf(&b, "            help) compadd %s; return ;;\n", strings.Join(ci.top, " "))
	b.WriteString(`        esac
        return
    fi
    case "$cmdpath:$nargs" in
`)
	nameArms(&b, ci, "        ", func(k string) string { return "kind=" + k })
	b.WriteString(`        *) kind="" ;;
    esac
    case "$kind" in
        machines)
            names=(${(f)"$(bbctl $addr __complete machines "$first" 2>/dev/null)"})
            compadd -- $names
            ;;
        ?*)
            names=(${(f)"$(bbctl $addr __complete $kind 2>/dev/null)"})
            compadd -- $names
            ;;
    esac
    if ((nargs == 0)) && [[ "$cmdpath" == "template validate" ]]; then
        _files -/
    fi
}

if [[ "$funcstack[1]" == "_bbctl" ]]; then
    _bbctl "$@"
else
    compdef _bbctl bbctl
fi
`)
	return b.String()
}

func fishCompletion(ci completionInfo) string {
	var b strings.Builder
	b.WriteString(`# fish completion for bbctl. Install with: bbctl completion fish > ~/.config/fish/completions/bbctl.fish

function __bbctl_path
    # Prints the command words (group and subcommand) given so far.
    set -l words (commandline -opc)
    set -e words[1]
    set -l out
    set -l skip 0
    for w in $words
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
`)
	fmt.Fprintf(&b, "            case %s\n                set skip 1\n", strings.Join(ci.valueFlags, " "))
	b.WriteString(`            case '-*'
            case '*'
                set -a out $w
        end
    end
    echo $out
end

function __bbctl_at
    # True when the command words given so far are exactly $argv.
    set -l p (__bbctl_path)
    test "$p" = "$argv"
end

function __bbctl_in
    # True when the command words start with $argv (flags of that command).
    set -l p (__bbctl_path)
    string match -q -- "$argv*" "$p"
end

function __bbctl_arg
    # True when the command words are the command $argv[1] and then $argv[2] arguments (with
    # a + after the number: at least that many).
    set -l p (string split ' ' -- (__bbctl_path))
    set -l c (string split ' ' -- $argv[1])
    set -l n (count $c)
    test (count $p) -ge $n; or return 1
    test "$p[1..$n]" = "$c"; or return 1
    set -l have (math (count $p) - $n)
    set -l want (string trim -r -c + -- $argv[2])
    if string match -q -- '*+' $argv[2]
        test $have -ge $want
    else
        test $have -eq $want
    end
end

function __bbctl_word
    # Prints command word $argv[1] (counting from 1) of those given so far.
    set -l p (string split ' ' -- (__bbctl_path))
    echo $p[$argv[1]]
end

complete -c bbctl -f
`)
	for _, t := range ci.top {
		fmt.Fprintf(&b, "complete -c bbctl -n '__bbctl_at \"\"' -a %s -d %q\n", t, ci.summaries[t])
	}
	for _, g := range sortedKeys(ci.subs) {
		for _, s := range ci.subs[g] {
			fmt.Fprintf(&b, "complete -c bbctl -n '__bbctl_at %s' -a %s -d %q\n", g, s, ci.summaries[g+" "+s])
		}
	}
	b.WriteString("complete -c bbctl -n '__bbctl_at completion' -a 'bash zsh fish'\n")
	for _, p := range sortedKeys(ci.names) {
		a := ci.names[p]
		for i, k := range a.kinds {
			n := strconv.Itoa(i)
			if a.repeat && i == len(a.kinds)-1 {
				n += "+"
			}
			src := "bbctl __complete " + k
			if k == "machines" {
				src += fmt.Sprintf(" (__bbctl_word %d)", len(strings.Fields(p))+1)
			}
			fmt.Fprintf(&b, "complete -c bbctl -n '__bbctl_arg \"%s\" %s' -a '(%s 2>/dev/null)'\n", p, n, src)
		}
	}
	b.WriteString("complete -c bbctl -n '__bbctl_at template validate' -F\n")
	for _, p := range sortedKeys(ci.flags) {
		for _, f := range ci.flags[p] {
			name := strings.TrimPrefix(f, "--")
			if slices.Contains([]string{"address", "json", "timeout"}, name) {
				continue
			}
			req := ""
			if slices.Contains(ci.valueFlags, f) {
				req = " -r"
			}
			fmt.Fprintf(&b, "complete -c bbctl -n '__bbctl_in %s' -l %s%s\n", p, name, req)
		}
	}
	b.WriteString(`complete -c bbctl -l address -r -F -d 'the daemon address: unix:/path or a path'
complete -c bbctl -l json -d 'print the reply as JSON'
complete -c bbctl -l timeout -r -d 'give up after this duration'
`)
	return b.String()
}
