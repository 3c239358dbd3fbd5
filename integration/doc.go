// Package integration tests bitbuilderd as users meet it: built from this tree, run as a real
// systemd service inside a booted systemd 257 test host (package testhost), and called with that
// host's real varlinkctl.
//
// The package boots one test host for all its tests (TestMain), builds cmd/bitbuilderd (and
// cmd/bbctl when it has a main package) and the helper programs under testdata/ once, and binds
// them read-only into the host at /opt/bitbuilder/bin, with the api/ directory at
// /opt/bitbuilder/api. Each test that needs a daemon starts its own instance as a transient
// service (systemd-run --service-type=notify) with its own socket and state directory, so the
// tests do not depend on each other's tenants. Those daemons keep records only (--no-host);
// the tests of the host steps (host_test.go) and the socket-activation test, which runs
// packaging/systemd's units on the production paths (/run/bitbuilder/io.bitbuilder,
// /var/lib/bitbuilder), change the shared host and delete their tenants before they end.
//
// Every reply printed by a call made through daemon.call is checked against the IDL of api/
// (idl_test.go); the tests themselves decode replies leniently, as Varlink clients must.
//
// The tests skip with -short, and when the machine cannot boot a test host (not root, rootfs not
// prepared: see integration/testhost/prepare.sh); BITBUILDER_TESTHOST_REQUIRE=1 turns the
// latter into a failure. Under go test -race the daemon is built with the race detector too.
//
// What varlinkctl 257 does, as measured here and asserted by these tests: a call answered with
// an error prints the error's parameters as JSON on stdout, logs "Method call M() failed: NAME"
// (with --more: "Method call failed: NAME") and exits with status 1 whatever the error
// (InvalidParameter, PermissionDenied, MethodNotFound and ExpectedMore included: 257 maps no
// error to its own exit status); --graceful=NAME turns that error into exit status 0; --more
// prints JSON-SEQ (RFC 7464: each record starts with 0x1E); --oneway prints nothing; a call
// without parameters reads them from standard input and sends {} when it is empty.
package integration
