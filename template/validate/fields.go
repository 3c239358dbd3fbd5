package validate

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

var (
	// idRe is the character rule of rule A6 for ID, VERSION_ID and the other identifier fields.
	idRe = regexp.MustCompile(`^[a-z0-9._-]+$`)
	// hostLabelRe is one DNS label.
	hostLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// idFields are the fields rule A6 restricts to [a-z0-9._-].
var idFields = []string{"ID", "VERSION_ID", "VERSION_CODENAME", "VARIANT_ID", "IMAGE_ID", "IMAGE_VERSION",
	"RELEASE_TYPE", "SYSEXT_LEVEL", "CONFEXT_LEVEL"}

// urlFields hold one http(s) URL each.
var urlFields = []string{"HOME_URL", "DOCUMENTATION_URL", "SUPPORT_URL", "BUG_REPORT_URL", "PRIVACY_POLICY_URL",
	"VENDOR_URL", "EXPERIMENT_URL"}

// knownKeys are the os-release(5) keys of systemd v257 (and a few newer ones); keys with the prefixes
// SYSEXT_, CONFEXT_ and PORTABLE_ are known too.
var knownKeys = []string{"NAME", "ID", "ID_LIKE", "PRETTY_NAME", "CPE_NAME", "VARIANT", "VARIANT_ID", "VERSION",
	"VERSION_ID", "VERSION_CODENAME", "BUILD_ID", "IMAGE_ID", "IMAGE_VERSION", "RELEASE_TYPE", "HOME_URL",
	"DOCUMENTATION_URL", "SUPPORT_URL", "BUG_REPORT_URL", "PRIVACY_POLICY_URL", "SUPPORT_END", "LOGO",
	"ANSI_COLOR", "VENDOR_NAME", "VENDOR_URL", "DEFAULT_HOSTNAME", "ARCHITECTURE", "FANCY_NAME", "EXPERIMENT",
	"EXPERIMENT_URL", "EXTENSION_RELOAD_MANAGER"}

func isKnownKey(k string) bool {
	return slices.Contains(knownKeys, k) || strings.HasPrefix(k, "SYSEXT_") || strings.HasPrefix(k, "CONFEXT_") ||
		strings.HasPrefix(k, "PORTABLE_")
}

// sortedKeys returns the keys of a release in sorted order, for deterministic findings.
func sortedKeys(r Release) []string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkIDFields applies the character rules of A6 (rule is "A6" for an os-release, "D30" for an
// extension-release) to every identifier field and to ID_LIKE.
func checkIDFields(c *collector, rule, path string, rel Release, allowAnyID bool) {
	for _, k := range idFields {
		v, ok := rel[k]
		if !ok || v == "" {
			continue
		}
		if k == "ID" && allowAnyID && v == "_any" {
			continue
		}
		if !idRe.MatchString(v) {
			c.errorf(rule, path, "%s=%q: use only lowercase letters, digits, '.', '_' and '-'", k, v)
		}
	}
	if v, ok := rel["ID_LIKE"]; ok {
		for _, id := range strings.Fields(v) {
			if !idRe.MatchString(id) {
				c.errorf(rule, path, "ID_LIKE entry %q: use a space-separated list of lowercase ids ([a-z0-9._-])", id)
			}
		}
	}
}

// checkHostRelease applies rules A5-A10 to a root's os-release.
func checkHostRelease(c *collector, path string, rel Release, now time.Time) {
	if rel["ID"] == "" {
		c.errorf("A5", path, "ID= is missing or empty; systemd-sysext and systemd-confext merge nothing onto a root without it: set ID=<distribution id>")
	}
	checkIDFields(c, "A6", path, rel, false)
	if rel["VERSION_ID"] == "" && rel["SYSEXT_LEVEL"] == "" && rel["CONFEXT_LEVEL"] == "" {
		c.warnf("A7", path, "neither VERSION_ID= nor SYSEXT_LEVEL=/CONFEXT_LEVEL= is set: extensions treat this root as a rolling release and match on ID only")
	}
	if v, ok := rel["SUPPORT_END"]; ok {
		t, err := time.Parse(time.DateOnly, v)
		switch {
		case err != nil:
			c.warnf("A8", path, "SUPPORT_END=%q is not a YYYY-MM-DD date", v)
		case now.After(t.AddDate(0, 0, 1)):
			c.warnf("A8", path, "SUPPORT_END=%s is in the past: the release is no longer supported", v)
		}
	}
	if v, ok := rel["DEFAULT_HOSTNAME"]; ok && !validHostname(v) {
		c.warnf("A9", path, "DEFAULT_HOSTNAME=%q is not a valid DNS hostname of at most 64 characters", v)
	}
	for _, k := range urlFields {
		if v, ok := rel[k]; ok && !validURL(v) {
			c.warnf("A9", path, "%s=%q is not one http:// or https:// URL", k, v)
		}
	}
	for _, k := range []string{"SYSEXT_SCOPE", "CONFEXT_SCOPE"} {
		if _, ok := rel[k]; ok {
			c.warnf("A9", path, "%s= belongs in an extension-release file, not in a root's os-release: remove it", k)
		}
	}
	for _, k := range sortedKeys(rel) {
		if !isKnownKey(k) {
			c.infof("A10", path, "unknown key %s (allowed; readers ignore it)", k)
		}
	}
}

func validHostname(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if !hostLabelRe.MatchString(l) {
			return false
		}
	}
	return true
}

func validURL(s string) bool {
	if strings.ContainsAny(s, " \t\n") {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
