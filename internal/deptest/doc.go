// Package deptest keeps ARCHITECTURE.md's "Who may import whom" true: its test loads the
// import graph of every package of the module with `go list -deps -json` and fails on an
// arrow the document does not allow, naming the importer and the imported (as tailscale's
// tstest/deptest does). Only the packages' own imports count, not their tests'.
//
// The rules live in deptest_test.go, one entry per package of the module; a new package
// needs an entry there and a line in ARCHITECTURE.md. The package has no other code.
package deptest
