package validate

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// voaPaths are the VOA load paths inside a root, highest priority first (rule E40).
var voaPaths = []string{"etc/voa", "run/voa", "usr/local/share/voa", "usr/share/voa"}

var (
	voaPartRe    = regexp.MustCompile(`^[0-9a-z._-]*$`)
	voaTokenRe   = regexp.MustCompile(`^[0-9a-z._-]+$`)
	voaContextRe = regexp.MustCompile(`^[a-z0-9_.-]+$`)
	// voaTechnologies: openpgp is fully specified, the others are drafts.
	voaTechnologies = []string{"openpgp", "ssh", "x509", "minisign", "signify"}
)

// VOA validates the VOA (UAPI.11 Verification of OS Artifacts) hierarchies of a root tree: rules E40-E48.
func VOA(ctx context.Context, dir string) (Report, error) {
	r, err := openRoot(dir)
	if err != nil {
		return Report{}, err
	}
	c := &collector{}
	for _, d := range []string{"usr/lib/voa", "usr/local/lib/voa", "var/lib/voa", "lib/voa", "voa"} {
		if _, fi, err := r.lstat(d); err == nil && fi.IsDir() {
			c.errorf("E40", d, "not a VOA load path; verifiers go to /etc/voa, /run/voa, /usr/local/share/voa or /usr/share/voa")
		}
	}
	if err := checkVOA(ctx, r, c); err != nil {
		return Report{}, err
	}
	return c.report(), nil
}

func checkVOA(ctx context.Context, r *root, c *collector) error {
	for prio, lp := range voaPaths {
		res, fi, err := r.lstat(lp)
		if err != nil {
			continue
		}
		if res != lp {
			// A parent is a symlink (resolved inside the root): check the directory it leads to.
			lp = res
		}
		if !fi.IsDir() {
			c.errorf("E40", lp, "a VOA load path must be a directory")
			continue
		}
		if lp == "run/voa" {
			c.warnf("E40", lp, "/run/voa is for runtime verifiers; an image's /run is empty at boot: ship verifiers in /usr/share/voa or /etc/voa")
		}
		if err := checkVOALevel(ctx, r, c, prio, lp, 1); err != nil {
			return err
		}
	}
	return nil
}

// checkVOALevel checks the entries of dir, which is at depth level-1 below load path number prio:
// level 1 is os, 2 purpose, 3 context, 4 technology, 5 the verifier files.
func checkVOALevel(ctx context.Context, r *root, c *collector, prio int, dir string, level int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ents, err := r.readDirResolved(dir)
	if err != nil {
		c.warnf("X1", dir, "cannot inspect: %s", fileError(err))
		return nil
	}
	for _, e := range ents {
		p := dir + "/" + e.Name()
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 {
			var follow bool
			isDir, follow = checkVOALink(r, c, prio, p, level)
			if !follow {
				continue
			}
		}
		if level < 5 {
			if !isDir {
				c.errorf("E41", p, "VOA layout is $os/$purpose/$context/$technology/<file>: a file cannot sit at the %s level", voaLevelName(level))
				continue
			}
			checkVOAName(c, p, e.Name(), level, dir)
			if e.Type()&fs.ModeSymlink == 0 {
				if err := checkVOALevel(ctx, r, c, prio, p, level+1); err != nil {
					return err
				}
			}
			continue
		}
		if isDir {
			c.errorf("E41", p, "VOA layout is $os/$purpose/$context/$technology/<file>: no directories below the technology level")
			continue
		}
		if path.Base(dir) == "openpgp" {
			checkOpenPGPFile(r, c, p, e.Name())
		}
	}
	return nil
}

func voaLevelName(level int) string {
	return [...]string{"", "os", "purpose", "context", "technology", "file"}[level]
}

// checkVOAName applies rules E42-E45 to the directory name at one level.
func checkVOAName(c *collector, p, name string, level int, parent string) {
	switch level {
	case 1:
		parts := strings.Split(name, ":")
		if parts[0] == "" {
			c.errorf("E42", p, "the os directory must start with the os-release ID (ID[:VERSION_ID[:VARIANT_ID[:IMAGE_ID[:IMAGE_VERSION]]]])")
		}
		for _, part := range parts {
			if !voaPartRe.MatchString(part) {
				c.errorf("E42", p, "os part %q: use only [0-9a-z._-]", part)
			}
		}
		if len(parts) > 1 && parts[len(parts)-1] == "" {
			c.errorf("E42", p, "trailing ':' in the os directory: omit empty trailing parts")
		}
		if len(parts) > 5 {
			c.warnf("E42", p, "more than 5 parts in the os directory (ID:VERSION_ID:VARIANT_ID:IMAGE_ID:IMAGE_VERSION)")
		}
	case 2:
		role := strings.TrimPrefix(name, "trust-anchor-")
		switch {
		case role == "" || !voaTokenRe.MatchString(role):
			c.errorf("E43", p, "purpose %q: use ROLE or trust-anchor-ROLE with ROLE of [0-9a-z._-] (package, repository-metadata, image)", name)
		case strings.HasPrefix(role, "trust-anchor-"):
			c.errorf("E43", p, "purpose %q: a role must not itself start with trust-anchor-", name)
		}
	case 3:
		if !voaContextRe.MatchString(name) {
			c.errorf("E44", p, "context %q: use [a-z0-9_.-], or \"default\" when there is no specific context", name)
		}
	case 4:
		switch {
		case !voaTokenRe.MatchString(name):
			c.errorf("E45", p, "technology %q: use [0-9a-z._-] (openpgp, ssh, x509, minisign, signify)", name)
		case !slices.Contains(voaTechnologies, name):
			c.warnf("E45", p, "unknown technology %q; known: %s", name, strings.Join(voaTechnologies, ", "))
		}
	}
}

// checkVOALink applies rules E47 and E48 to a symlink at level; it returns whether the link's target is a
// directory, and whether the caller should treat the link as a valid entry.
func checkVOALink(r *root, c *collector, prio int, p string, level int) (isDir, ok bool) {
	target, err := os.Readlink(r.abs(p))
	if err != nil {
		c.warnf("X1", p, "cannot read the symlink: %s", fileError(err))
		return false, false
	}
	if target == "/dev/null" {
		switch {
		case level < 5:
			c.warnf("E48", p, "a masked directory is ignored; mask single verifier files only")
		case prio > 1:
			c.warnf("E48", p, "masking with /dev/null is allowed only in /etc/voa and /run/voa")
		}
		return false, false
	}
	if strings.HasPrefix(target, "/") {
		c.warnf("E47", p, "absolute symlink to %q is ignored; use a relative link", target)
		return false, false
	}
	res, fi, err := r.stat(p)
	if err != nil {
		c.warnf("E47", p, "dangling or looping symlink to %q is ignored", target)
		return false, false
	}
	tprio := -1
	for i, lp := range voaPaths {
		if res == lp || strings.HasPrefix(res, lp+"/") {
			tprio = i
		}
	}
	switch {
	case tprio < 0:
		c.warnf("E47", p, "symlink to %q leaves the VOA load paths and is ignored", target)
		return false, false
	case tprio < prio:
		c.warnf("E47", p, "symlink into the higher-priority load path %s is ignored; link only into the same or a lower-priority path", voaPaths[tprio])
		return false, false
	case path.Base(res) != path.Base(p):
		c.warnf("E47", p, "symlink renames %s to %s and is ignored; keep the name", path.Base(res), path.Base(p))
		return false, false
	case level < 5 && !fi.IsDir():
		c.warnf("E47", p, "symlink changes the file type (expected a directory) and is ignored")
		return false, false
	case level == 5 && !fi.Mode().IsRegular():
		c.warnf("E47", p, "symlink changes the file type (expected a regular file) and is ignored")
		return false, false
	}
	if level == 5 && path.Base(path.Dir(p)) == "openpgp" {
		checkOpenPGPFile(r, c, p, path.Base(p))
		return false, false
	}
	return fi.IsDir(), true
}

var pgpNameRe = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})\.openpgp$`)

// checkOpenPGPFile applies rule E46 to one OpenPGP verifier.
func checkOpenPGPFile(r *root, c *collector, p, name string) {
	if !pgpNameRe.MatchString(name) {
		c.errorf("E46", p, "an OpenPGP verifier is named <lowercase hex fingerprint>.openpgp (40 hex digits for v4, 64 for v6)")
	}
	data, err := r.readFile(p, certLimit)
	if err != nil {
		c.errorf("E46", p, "cannot read the certificate: %s", fileError(err))
		return
	}
	if n := bytes.Count(data, []byte("-----BEGIN PGP ")); n != 1 {
		if n == 0 {
			c.errorf("E46", p, "not an ASCII-armored OpenPGP certificate: export it with --armor")
		} else {
			c.errorf("E46", p, "%d armored blocks: put one certificate per file", n)
		}
		if n == 0 {
			return
		}
	}
	block, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		c.errorf("E46", p, "not an ASCII-armored OpenPGP certificate (%v): export it with --armor", err)
		return
	}
	if block.Type != "PGP PUBLIC KEY BLOCK" {
		if strings.Contains(block.Type, "PRIVATE") {
			c.errorf("E46", p, "the file holds secret key material: ship only the public certificate")
		} else {
			c.errorf("E46", p, "armor type %q: a certificate is a PGP PUBLIC KEY BLOCK", block.Type)
		}
		return
	}
	body, err := io.ReadAll(io.LimitReader(block.Body, certLimit))
	if err != nil {
		c.errorf("E46", p, "corrupt armor: %v", err)
		return
	}
	ents, err := openpgp.ReadKeyRing(bytes.NewReader(body))
	if err != nil {
		c.errorf("E46", p, "cannot parse the certificate: %v", err)
		return
	}
	if len(ents) != 1 {
		c.errorf("E46", p, "%d certificates: put one certificate per file", len(ents))
		return
	}
	e := ents[0]
	if e.PrivateKey != nil || hasSecretPackets(body) {
		c.errorf("E46", p, "the file holds secret key material: ship only the public certificate")
	}
	fpr := hex.EncodeToString(e.PrimaryKey.Fingerprint)
	if want := fpr + ".openpgp"; name != want {
		c.errorf("E46", p, "the file name does not match the certificate's fingerprint: rename it to %s", want)
	}
}

// hasSecretPackets reports whether an OpenPGP packet stream holds a secret key or subkey packet.
func hasSecretPackets(body []byte) bool {
	pr := packet.NewReader(bytes.NewReader(body))
	for {
		pk, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil {
			return false
		}
		if _, ok := pk.(*packet.PrivateKey); ok {
			return true
		}
	}
}
