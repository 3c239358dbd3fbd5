//go:build race

package rpc

// The race detector's instrumentation allocates where the plain build does not, so the
// allocation counts are asserted without it only.
func init() { raceBuild = true }
