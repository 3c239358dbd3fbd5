package machines

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// VMConfig is a machine template's config/vm-config.yaml: how systemd-vmspawn runs its VMs. It is read with a
// maintained YAML library (go.yaml.in/yaml/v3, strict: unknown keys are errors). CPUs and Memory are the
// template's suggestions; a machine's own limits (from its record, which takes metadata.json's defaults) win.
type VMConfig struct {
	Firmware   string `yaml:"firmware"`    // uefi (default) or bios
	CPUs       int    `yaml:"cpus"`        // informational
	Memory     string `yaml:"memory"`      // informational
	KVM        string `yaml:"kvm"`         // auto, yes or no
	TPM        string `yaml:"tpm"`         // auto, yes or no
	SecureBoot string `yaml:"secure_boot"` // auto, yes or no
	// NetworkBridge may only name the tenant's bridge (br-tenant-%i): the daemon puts every VM there.
	NetworkBridge string `yaml:"network_bridge"`
	Console       string `yaml:"console"` // interactive, read-only, native, gui or headless
}

// VMConfigError names the key of vm-config.yaml that is refused and why.
type VMConfigError struct {
	Key, Reason string
}

func (e *VMConfigError) Error() string {
	return fmt.Sprintf("config/vm-config.yaml: %s: %s", e.Key, e.Reason)
}

// MaxVMConfigSize bounds vm-config.yaml.
const MaxVMConfigSize = 64 << 10

// ParseVMConfig parses vm-config.yaml (at most MaxVMConfigSize bytes, one document, known keys only).
func ParseVMConfig(data []byte) (VMConfig, error) {
	var c VMConfig
	if len(data) > MaxVMConfigSize {
		return c, &VMConfigError{Key: "(file)", Reason: fmt.Sprintf("%d bytes, more than %d", len(data), MaxVMConfigSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, &VMConfigError{Key: "(document)", Reason: err.Error()}
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return c, &VMConfigError{Key: "(document)", Reason: "more than one YAML document"}
	}
	check := func(key, v string, allowed ...string) error {
		if v != "" && !slices.Contains(allowed, v) {
			return &VMConfigError{Key: key, Reason: fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", "))}
		}
		return nil
	}
	for _, err := range []error{
		check("firmware", c.Firmware, "uefi", "bios"),
		check("kvm", c.KVM, "auto", "yes", "no"),
		check("tpm", c.TPM, "auto", "yes", "no"),
		check("secure_boot", c.SecureBoot, "auto", "yes", "no"),
		check("console", c.Console, "interactive", "read-only", "native", "gui", "headless"),
		check("network_bridge", c.NetworkBridge, "br-tenant-%i"),
	} {
		if err != nil {
			return c, err
		}
	}
	if c.CPUs < 0 {
		return c, &VMConfigError{Key: "cpus", Reason: "negative"}
	}
	return c, nil
}

// Args returns the systemd-vmspawn options c asks for.
func (c VMConfig) Args() []string {
	var out []string
	if c.Firmware == "bios" {
		out = append(out, "--firmware=bios")
	}
	for _, kv := range [][2]string{{"--kvm", c.KVM}, {"--tpm", c.TPM}, {"--secure-boot", c.SecureBoot}, {"--console", c.Console}} {
		if kv[1] != "" && kv[1] != "auto" {
			out = append(out, kv[0]+"="+kv[1])
		}
	}
	return out
}
