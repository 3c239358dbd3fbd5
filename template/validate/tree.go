package validate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the type of a template, as its metadata.json names it.
type Kind string

// Template kinds.
const (
	KindInfrastructure Kind = "infrastructure"
	KindMachine        Kind = "machine"
	KindContainer      Kind = "container"
	KindHomed          Kind = "homed"
	KindNetwork        Kind = "network"
	KindSysext         Kind = "sysext"
	KindConfext        Kind = "confext"
)

// Kinds lists every template kind.
func Kinds() []Kind {
	return []Kind{KindInfrastructure, KindMachine, KindContainer, KindHomed, KindNetwork, KindSysext, KindConfext}
}

// Options tune a validation. The zero value is ready to use.
type Options struct {
	// Architecture is the systemd architecture id of the target (e.g. "x86-64"). Default: the architecture of
	// the running program (runtime.GOARCH mapped to systemd's ids).
	Architecture string
	// BaseRoot is an optional root file system whose os-release an extension is checked against (the
	// compatibility algorithm, rule "DC") and whose files an extension should not shadow (rule D36).
	BaseRoot string
	// Now returns the current time, for SUPPORT_END (rule A8). Default: time.Now.
	Now func() time.Time
	// Bootable makes RootFS require an init (rule C25). Tree sets it for the kinds that boot their root.
	Bootable bool
	// ArtifactSources are the host files a template's artifacts.json may ask for (see ArtifactAllowed); nil
	// means DefaultArtifactSources. It is the host administrator's list, never the template's.
	ArtifactSources []string

	base *baseInfo // the parsed BaseRoot, set by withDefaults
	// materialized says the root is part of a template checkout, whose layout directories (RequiredDirs) the
	// materializer creates with their modes: Git cannot carry empty directories nor directory modes, so their
	// absence or mode is no finding. Set by Tree.
	materialized bool
}

type baseInfo struct {
	rel    Release
	initrd bool
}

func (o Options) withDefaults() Options {
	if o.Architecture == "" {
		o.Architecture = NativeArchitecture()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BaseRoot != "" && o.base == nil {
		o.base = &baseInfo{rel: Release{}}
		if r, err := openRoot(o.BaseRoot); err == nil {
			o.base = (&rootWalker{r: r}).baseInfo()
		}
	}
	return o
}

// Tree validates a template checkout of the given kind:
//   - infrastructure and container: rootfs/ (RootFS; bootable, a container unless its
//     config/nspawn-settings.conf says Boot=no),
//   - machine: disk-image/efi, disk-image/boot and disk-image/rootfs (rules F51-F54 and RootFS),
//   - homed: home-skeleton/ and config/*.json,
//   - network: the unit files' names and types,
//   - sysext and confext: the checkout is the extension tree (Extension); its image name is metadata.json's
//     template.name, else the directory's name; metadata.json itself is not content.
//
// Paths in an artifacts.json at the checkout's root (see ReadArtifacts) count as present for the rules that
// require files (C25, F52, F53), since the materializer provides them.
func Tree(ctx context.Context, dir string, kind Kind, opts Options) (Report, error) {
	r, err := openRoot(dir)
	if err != nil {
		return Report{}, err
	}
	opts = opts.withDefaults()
	opts.materialized = true
	c := &collector{}
	arts, err := readArtifacts(r, c, opts.ArtifactSources)
	if err != nil {
		return Report{}, err
	}
	switch kind {
	case KindInfrastructure, KindContainer:
		o := opts
		o.Bootable = kind == KindInfrastructure || containerBoots(r, c)
		err = checkSubRoot(ctx, r, c, "rootfs", o, arts)
		if kind == KindContainer {
			checkTemplateImages(r, c)
		}
	case KindMachine:
		err = checkMachine(ctx, r, c, opts, arts)
		checkTemplateImages(r, c)
	case KindHomed:
		err = checkHomed(ctx, r, c)
	case KindNetwork:
		err = checkNetwork(ctx, r, c)
	case KindSysext, KindConfext:
		err = checkExtension(ctx, r, c, Class(kind), templateName(r, dir), opts, true)
	default:
		return Report{}, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	if err != nil {
		return Report{}, err
	}
	return c.report(), nil
}

// checkSubRoot runs RootFS on the directory sub of a checkout.
func checkSubRoot(ctx context.Context, r *root, c *collector, sub string, opts Options, arts artifacts) error {
	res, ok := dirPath(r, sub)
	if !ok {
		c.errorf("C17", sub, "the template has no %s/ directory", sub)
		return nil
	}
	sr := &root{dir: r.abs(res)}
	sc := c.sub(sub)
	if opts.Bootable && !hasInit(sr) && arts.hasAny(sub, initPaths) {
		opts.Bootable = false
		sc.infof("X3", "sbin/init", "the init is provided at materialization (artifacts.json)")
	}
	if err := checkRootFS(ctx, sr, sc, opts); err != nil {
		return err
	}
	c.merge(sc)
	return nil
}

// templateName returns metadata.json's template.name, else the checkout directory's name.
func templateName(r *root, dir string) string {
	var md struct {
		Template struct {
			Name string `json:"name"`
		} `json:"template"`
	}
	if data, err := r.readFile("metadata.json", releaseLimit); err == nil && json.Unmarshal(data, &md) == nil && md.Template.Name != "" {
		return md.Template.Name
	}
	return path.Base(strings.TrimSuffix(dir, "/"))
}

// containerBoots reads config/nspawn-settings.conf: the container boots its init unless [Exec] Boot=no.
func containerBoots(r *root, c *collector) bool {
	const p = "config/nspawn-settings.conf"
	data, err := r.readFile(p, releaseLimit)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		c.errorf("X2", p, "cannot read: %s", fileError(err))
		return true
	}
	section := ""
	boot := true
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		case section == "Exec":
			k, v, ok := strings.Cut(line, "=")
			if ok && strings.TrimSpace(k) == "Boot" {
				switch strings.ToLower(strings.TrimSpace(v)) {
				case "no", "false", "0", "off", "n", "f":
					boot = false
				default:
					boot = true
				}
			}
		}
	}
	return boot
}

// checkNetwork checks a network template: regular text files only.
func checkNetwork(ctx context.Context, r *root, c *collector) error {
	return r.walk(ctx, ".", func(rel string, d fs.DirEntry) error {
		if d.IsDir() && d.Name() == ".git" {
			return errSkipDir
		}
		if !utf8.ValidString(d.Name()) {
			c.warnf("C22", strings.ToValidUTF8(rel, "\uFFFD"), "the file name is not valid UTF-8; rename it")
		}
		if d.Type()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
			c.warnf("C21", rel, "device node, socket or FIFO in a network template; remove it")
		}
		return nil
	}, func(rel string, err error) { c.warnf("X1", rel, "cannot inspect: %s", fileError(err)) })
}

// ImageName is the image name of an extension template's checkout dir, as Tree uses it: metadata.json's
// template.name, else the directory's name. Its release file must be extension-release.<ImageName>, and the
// directory a machine's systemd-sysext/confext finds it in must carry this name.
func ImageName(dir string) string {
	r, err := openRoot(dir)
	if err != nil {
		return path.Base(strings.TrimSuffix(dir, "/"))
	}
	return templateName(r, dir)
}
