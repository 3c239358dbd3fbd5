// Command bbctl is the command-line client of bitbuilderd. All of it lives in package cli;
// see `bbctl help` for the commands and the exit codes.
package main

// The man pages and completion scripts in packaging/ are generated from the help text; a test
// checks that the committed ones are current.
//go:generate sh -c "go run . __man bbctl >../../packaging/man/bbctl.1"
//go:generate sh -c "go run ../bitbuilderd -h 2>&1 | go run . __man bitbuilderd >../../packaging/man/bitbuilderd.8"
//go:generate sh -c "go run . completion bash >../../packaging/completions/bbctl.bash"
//go:generate sh -c "go run . completion zsh >../../packaging/completions/_bbctl"
//go:generate sh -c "go run . completion fish >../../packaging/completions/bbctl.fish"

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bitbuilder/bitbuilder/cli"
)

// version is set at build time with -ldflags "-X main.version=...": the Makefile sets it and
// daemon.Version to the same string, so that bbctl --version and bitbuilderd --version of one
// build agree. (bbctl may not import package daemon: see internal/deptest.) The default is
// daemon.Version's.
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one ends bbctl at once.
		<-ctx.Done()
		stop()
	}()
	app := &cli.App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Version: version}
	code := app.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
