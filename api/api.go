// Package api holds BitBuilder's Varlink interface descriptions (the io.bitbuilder.*.varlink
// files) and embeds them, so that the daemon can check every call against the IDL it serves.
//
// The Go bindings in the iobitbuilder* subpackages are generated from these files with
// `go generate ./api/...` and checked in; CI fails when regeneration changes them.
package api

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:generate sh -c "go run github.com/varlink/go/cmd/varlink-go-interface-generator io.bitbuilder.Tenant.varlink && mv iobitbuildertenant.go iobitbuildertenant/"
//go:generate sh -c "go run github.com/varlink/go/cmd/varlink-go-interface-generator io.bitbuilder.Template.varlink && mv iobitbuildertemplate.go iobitbuildertemplate/"
//go:generate sh -c "go run github.com/varlink/go/cmd/varlink-go-interface-generator io.bitbuilder.Network.varlink && mv iobitbuildernetwork.go iobitbuildernetwork/"

//go:embed *.varlink
var files embed.FS

// Interface names served by bitbuilderd.
const (
	Tenant   = "io.bitbuilder.Tenant"
	Template = "io.bitbuilder.Template"
	Network  = "io.bitbuilder.Network"
)

// Description returns the IDL text of the named interface.
func Description(name string) (string, error) {
	b, err := files.ReadFile(name + ".varlink")
	if err != nil {
		return "", fmt.Errorf("api: no interface description for %q", name)
	}
	return string(b), nil
}

// Names returns the names of all interfaces described in this package, sorted.
func Names() []string {
	entries, _ := files.ReadDir(".")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".varlink"))
	}
	sort.Strings(names)
	return names
}
