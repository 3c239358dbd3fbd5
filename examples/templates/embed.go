// Package templates embeds the example templates that bitbuilderd uses as built-in
// defaults: the network template is every tenant's network profile unless the tenant
// names a network template of its own.
package templates

import (
	"embed"
	"io/fs"
)

//go:embed network
var network embed.FS

// Network returns the example network template as a file system rooted at the template.
func Network() fs.FS {
	sub, err := fs.Sub(network, "network")
	if err != nil {
		panic(err) // the embedded tree always has the directory
	}
	return sub
}
