//go:build race

package integration

// Under `go test -race` the daemon and helpers are built with the race detector too, so that
// races in bitbuilderd under real varlinkctl traffic show in its journal (daemon.checkJournal).
func init() { raceBuild = true }
