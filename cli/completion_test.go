package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

func TestCompletionScripts(t *testing.T) {
	cases := []struct {
		shell string
		check []string // a syntax check: the shell and its flags, run on the script file
		want  []string
	}{
		{"bash", []string{"bash", "-n"}, []string{"complete -F _bbctl bbctl", "__complete"}},
		{"zsh", []string{"zsh", "-n"}, []string{"#compdef bbctl", "compdef _bbctl bbctl"}},
		{"fish", []string{"fish", "--no-execute"}, []string{"complete -c bbctl", "__complete tenants"}},
	}
	for _, c := range cases {
		t.Run(c.shell, func(t *testing.T) {
			r := bbctl(t, "unix:/nonexistent", "completion", c.shell)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("script lacks %q", w)
				}
			}
			testpolicy.RequireTool(t, c.check[0]) // for the syntax check
			file := filepath.Join(t.TempDir(), "bbctl."+c.shell)
			if err := os.WriteFile(file, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.CommandContext(t.Context(), c.check[0], append(c.check[1:], file)...).CombinedOutput(); err != nil {
				t.Errorf("%s syntax check: %v\n%s", c.shell, err, out)
			}
		})
	}
}

// TestBashCompletion runs the bash function the way bash's completion does, with a bbctl on
// PATH that is this test binary acting as bbctl, against a real daemon.
func TestBashCompletion(t *testing.T) {
	testpolicy.RequireTool(t, "bash")
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "alpha")
	mustRun(t, d.addr, "tenant", "create", "beta")
	addTemplate(t, d.addr, "ctr", "container")
	mustRun(t, d.addr, "tenant", "create", "acme", "--template", "container:c:ctr", "--machine", "web:container:c", "--machine", "db:container:c")

	bin := bbctlOnPath(t)
	script := filepath.Join(t.TempDir(), "bbctl.bash")
	if err := os.WriteFile(script, []byte(mustRun(t, d.addr, "completion", "bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		line   string // the words typed, the last one being completed
		want   string
		absent string // words that must not be offered
	}{
		{"bbctl ", "network template tenant machine version completion help", ""},
		{"bbctl ten", "tenant", ""},
		{"bbctl tenant ", "create get list update delete start stop watch", ""},
		{"bbctl tenant get ", "alpha beta", ""},
		{"bbctl tenant get alpha ", "alpha beta", ""},
		{"bbctl tenant update alpha ", "", "alpha beta"},
		{"bbctl --json tenant stop a", "alpha acme", ""},
		{"bbctl tenant stop alpha --wait ", "alpha beta acme", ""},
		{"bbctl tenant create x --c", "--cpus", ""},
		{"bbctl tenant create x --m", "--machine --memory", ""},
		{"bbctl tenant update x --no", "--no-machines", ""},
		{"bbctl tenant start x --w", "--wait", ""},
		{"bbctl machine ", "list start stop restart shell", ""},
		{"bbctl machine list ", "alpha acme", ""},
		{"bbctl machine ls alpha ", "beta acme", ""},
		{"bbctl machine start ", "acme alpha", "web"},
		{"bbctl machine start acme ", "web db", "alpha"},
		{"bbctl machine restart --wait acme web ", "db", "acme"},
		{"bbctl machine shell acme w", "web", ""},
		{"bbctl machine shell acme web ", "", "web db acme"},
		{"bbctl machine stop x --", "--wait --timeout", ""},
		{"bbctl completion ", "bash zsh fish", ""},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			words := strings.Split(c.line, " ")
			prog := "source " + script + "\nCOMP_WORDS=("
			for _, w := range words {
				prog += "'" + w + "' "
			}
			prog += ")\nCOMP_CWORD=" + itoa(int64(len(words)-1)) + "\n_bbctl\necho \"${COMPREPLY[*]}\"\n"
			cmd := exec.CommandContext(t.Context(), "bash", "-c", prog)
			cmd.Env = shellEnv(bin, d.addr)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got := strings.Fields(string(out))
			for _, w := range strings.Fields(c.want) {
				if !contains(got, w) {
					t.Errorf("completions %q lack %q", got, w)
				}
			}
			for _, w := range strings.Fields(c.absent) {
				if contains(got, w) {
					t.Errorf("completions %q offer %q", got, w)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// bbctlOnPath returns a directory with a bbctl that is this test binary acting as bbctl.
func bbctlOnPath(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "bbctl")); err != nil {
		t.Fatal(err)
	}
	return bin
}

func shellEnv(bin, addr string) []string {
	return append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), execEnv+"=1", "BITBUILDER_ADDRESS="+addr)
}

// TestFishCompletion asks fish for completions with the generated script loaded.
func TestFishCompletion(t *testing.T) {
	testpolicy.RequireTool(t, "fish")
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "alpha")
	addTemplate(t, d.addr, "ctr", "container")
	mustRun(t, d.addr, "tenant", "create", "acme", "--template", "container:c:ctr", "--machine", "web:container:c", "--machine", "db:container:c")
	bin := bbctlOnPath(t)
	script := filepath.Join(t.TempDir(), "bbctl.fish")
	if err := os.WriteFile(script, []byte(mustRun(t, d.addr, "completion", "fish")), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ line, want, absent string }{
		{"bbctl ", "tenant template network machine", ""},
		{"bbctl template ", "add validate", ""},
		{"bbctl network get ", "alpha", ""},
		{"bbctl network get alpha ", "alpha", ""},
		{"bbctl network describe alpha ", "", "alpha"},
		{"bbctl tenant create x --", "--cpus --memory --stopped --machine --wait", ""},
		{"bbctl tenant update x --", "--machine --no-machines", ""},
		{"bbctl tenant stop alpha ", "alpha acme", ""},
		{"bbctl machine ", "list start stop restart shell", ""},
		{"bbctl machine start ", "acme alpha", "web"},
		{"bbctl machine start acme ", "web db", "alpha"},
		{"bbctl machine stop acme web ", "db", "alpha"},
		{"bbctl machine shell acme ", "web db", ""},
		{"bbctl machine shell acme web ", "", "web db"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), "fish", "--no-config", "-c", "source "+script+"; complete -C '"+c.line+"'")
			cmd.Env = shellEnv(bin, d.addr)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var got []string
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) > 0 {
					got = append(got, f[0])
				}
			}
			for _, w := range strings.Fields(c.want) {
				if !contains(got, w) {
					t.Errorf("completions %q lack %q", got, w)
				}
			}
			for _, w := range strings.Fields(c.absent) {
				if contains(got, w) {
					t.Errorf("completions %q offer %q", got, w)
				}
			}
		})
	}
}

// TestZshCompletion runs the zsh completion function in zsh with compadd and _describe
// replaced by functions that print the candidates.
func TestZshCompletion(t *testing.T) {
	testpolicy.RequireTool(t, "zsh")
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "alpha")
	addTemplate(t, d.addr, "ctr", "container")
	mustRun(t, d.addr, "tenant", "create", "acme", "--template", "container:c:ctr", "--machine", "web:container:c", "--machine", "db:container:c")
	bin := bbctlOnPath(t)
	script := filepath.Join(t.TempDir(), "_bbctl")
	if err := os.WriteFile(script, []byte(mustRun(t, d.addr, "completion", "zsh")), 0o644); err != nil {
		t.Fatal(err)
	}
	const stubs = `compdef() { : }
_files() { : }
compadd() {
    while [[ $# -gt 0 && $1 == -* && $1 != -- ]]; do shift; done
    [[ $1 == -- ]] && shift
    print -l -- "$@"
}
_describe() {
    local -a a
    a=("${(@P)4}")
    print -l -- "${a[@]%%:*}"
}
`
	cases := []struct{ line, want, absent string }{
		{"bbctl ", "tenant template network machine version completion help", ""},
		{"bbctl network ", "get list add-peer remove-peer describe apply", ""},
		{"bbctl tenant get ", "alpha", ""},
		{"bbctl tenant get alpha ", "alpha", ""},
		{"bbctl tenant update alpha ", "", "alpha"},
		{"bbctl --address " + d.socket + " tenant stop ", "alpha", ""},
		{"bbctl tenant delete alpha ", "alpha acme", ""},
		{"bbctl template validate --", "--type --base --arch --json", ""},
		{"bbctl tenant create x --", "--machine --wait", ""},
		{"bbctl machine ", "list start stop restart shell", ""},
		{"bbctl machine restart ", "acme", "web"},
		{"bbctl --address " + d.socket + " machine restart acme ", "web db", "acme"},
		{"bbctl machine start acme web --wait ", "db", ""},
		{"bbctl machine shell acme web ", "", "web db"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			words := strings.Split(c.line, " ")
			prog := stubs + "source " + script + "\nwords=("
			for _, w := range words {
				prog += "'" + w + "' "
			}
			prog += ")\nCURRENT=" + itoa(int64(len(words))) + "\n_bbctl\n"
			cmd := exec.CommandContext(t.Context(), "zsh", "-f", "-c", prog)
			cmd.Env = shellEnv(bin, d.addr)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got := strings.Fields(string(out))
			for _, w := range strings.Fields(c.want) {
				if !contains(got, w) {
					t.Errorf("completions %q lack %q", got, w)
				}
			}
			for _, w := range strings.Fields(c.absent) {
				if contains(got, w) {
					t.Errorf("completions %q offer %q", got, w)
				}
			}
		})
	}
}
