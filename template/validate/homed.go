package validate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits of the homed template checks.
const (
	// recordLimit is the largest user record the validator reads.
	recordLimit = 64 << 10
	// scanFileLimit, scanFiles and scanBytes bound the search for password hashes in a homed template.
	scanFileLimit = 1 << 20
	scanFiles     = 4096
	scanBytes     = 64 << 20
)

// Regular uids (systemd's UIDS-GIDS.md): below is the system range, above are systemd-homed's, the
// container and dynamic service user ranges, nobody and the 16-bit -1.
const (
	minRegularUID = 1000
	maxRegularUID = 60000
)

// cryptHash matches a crypt(3) password hash (MD5, bcrypt, SHA-256/512, scrypt, yescrypt, gost-yescrypt, ...).
var cryptHash = regexp.MustCompile(`\$(1|2[abxy]|5|6|7|y|gy|sha1|md5|argon2(?:id|i|d))\$[./0-9A-Za-z,=$]{8,}`)

// secretKeys are the user record keys that hold secrets or a user's own credentials; none belongs in a
// template, which every user made from it shares. The tenant record gives the SSH keys.
var secretKeys = []string{"hashedPassword", "sshAuthorizedKeys", "pkcs11EncryptedKey", "fido2HmacSalt", "fido2HmacCredential", "recoveryKey", "password", "tokenPin"}

// userRecordTypes are the JSON types of the user record fields a homed template commonly sets (systemd's JSON
// User Record format); other fields are passed on unchecked, as systemd does.
var userRecordTypes = map[string]string{
	"userName": "string", "realName": "string", "emailAddress": "string", "iconName": "string", "location": "string",
	"shell": "string", "homeDirectory": "string", "disposition": "string", "storage": "string", "timeZone": "string",
	"preferredLanguage": "string", "uid": "number", "gid": "number", "umask": "number", "diskSize": "number",
	"memberOf": "array", "environment": "array", "locked": "boolean", "enforcePasswordPolicy": "boolean",
	"perMachine": "array", "privileged": "object", "binding": "object", "status": "object", "signature": "array",
}

// checkHomed checks a homed template: its skeleton (rules C21, C22, H4), its user record (H1, H3), that no
// file of it holds a secret or password hash (H2), and its JSON configuration (X2).
func checkHomed(ctx context.Context, r *root, c *collector) error {
	if skel, ok := dirPath(r, "home-skeleton"); !ok {
		c.errorf("X2", "home-skeleton", "a homed template needs a home-skeleton/ directory")
	} else {
		err := r.walk(ctx, skel, func(rel string, d fs.DirEntry) error {
			if !utf8.ValidString(d.Name()) {
				c.warnf("C22", strings.ToValidUTF8(rel, "\uFFFD"), "the file name is not valid UTF-8; rename it")
			}
			if d.Type()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
				c.warnf("C21", rel, "device node, socket or FIFO in a home skeleton; remove it")
			}
			if d.Type()&fs.ModeSymlink != 0 {
				checkSkeletonLink(r, c, skel, rel)
			}
			return nil
		}, func(rel string, err error) { c.warnf("X1", rel, "cannot inspect: %s", fileError(err)) })
		if err != nil {
			return err
		}
	}
	checkUserRecord(r, c, "config/user-record.json")
	var cfg map[string]any
	checkJSON(r, c, "config/homed-config.json", &cfg, false)
	return scanSecrets(ctx, r, c)
}

// checkSkeletonLink reports a symlink of the skeleton whose target leads out of the home (rule H4): an
// absolute target (in a machine it names the machine's files) or one that climbs above the skeleton's top.
func checkSkeletonLink(r *root, c *collector, skel, rel string) {
	target, err := os.Readlink(r.abs(rel))
	if err != nil {
		c.warnf("X1", rel, "cannot read the symlink: %s", fileError(err))
		return
	}
	inHome := strings.TrimPrefix(strings.TrimPrefix(rel, skel), "/")
	resolved := path.Clean(path.Join(path.Dir(inHome), target))
	if strings.HasPrefix(target, "/") || resolved == ".." || strings.HasPrefix(resolved, "../") {
		c.errorf("H4", rel, "symlink to %q leads out of the home; make it relative and inside home-skeleton/", target)
	}
}

// checkUserRecord checks the template's user record against systemd's JSON User Record format (H1), its
// uid and gid (H3) and that it carries no secrets (H2).
func checkUserRecord(r *root, c *collector, p string) {
	data, err := r.readFile(p, recordLimit)
	if err != nil {
		c.errorf("H1", p, "a homed template needs a user record: cannot read: %s", fileError(err))
		return
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		c.errorf("H1", p, "not a JSON object (systemd's JSON User Record format): %v", err)
		return
	}
	name, ok := rec["userName"].(string)
	switch {
	case !ok:
		c.errorf("H1", p, "userName is required (a string)")
	case !validUserName(name):
		c.errorf("H1", p, "userName %q does not match systemd's user name rules ([a-zA-Z_][a-zA-Z0-9_-]*, at most 31 characters)", name)
	}
	keys := make([]string, 0, len(rec))
	for k := range rec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if want, known := userRecordTypes[k]; known && jsonType(rec[k]) != want {
			c.errorf("H1", p, "%s is a JSON %s, systemd's user record format wants a %s", k, jsonType(rec[k]), want)
		}
	}
	if d, ok := rec["disposition"].(string); ok && d != "regular" {
		c.errorf("H1", p, "disposition %q: a tenant user is a regular user (disposition \"regular\")", d)
	}
	if s, ok := rec["shell"].(string); ok && !strings.HasPrefix(s, "/") {
		c.errorf("H1", p, "shell %q is not an absolute path", s)
	}
	for _, k := range []string{"uid", "gid"} {
		v, ok := rec[k].(float64)
		if !ok {
			continue
		}
		if v != float64(int64(v)) || v < minRegularUID || v > maxRegularUID {
			c.errorf("H3", p, "%s %v is not in the regular range %d-%d (0-999 is the system range; systemd reserves the ids above for homed, containers and dynamic users)", k, v, minRegularUID, maxRegularUID)
		}
	}
	findSecrets(c, p, "", rec)
}

// findSecrets reports a "secret" section, and the keys of secretKeys, anywhere in v (rule H2).
func findSecrets(c *collector, p, at string, v any) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			field := strings.TrimPrefix(at+"."+k, ".")
			switch {
			case k == "secret":
				c.errorf("H2", p, "%s: the user record template carries a secret section; every user made from it would share those secrets: remove it", field)
			case slices.Contains(secretKeys, k):
				c.errorf("H2", p, "%s: a user's own credentials do not belong in a template (SSH keys come from the tenant record): remove it", field)
			default:
				findSecrets(c, p, field, v[k])
			}
		}
	case []any:
		for i, e := range v {
			findSecrets(c, p, fmt.Sprintf("%s[%d]", at, i), e)
		}
	}
}

// scanSecrets reports every file of the template that holds a crypt(3) password hash (rule H2). Git's own
// directory is not content; the scan is bounded (files of at most scanFileLimit bytes, scanFiles files,
// scanBytes in all), and a template beyond the bounds is refused, since it could not be checked.
func scanSecrets(ctx context.Context, r *root, c *collector) error {
	files, total := 0, 0
	stopped := false
	err := r.walk(ctx, ".", func(rel string, d fs.DirEntry) error {
		if d.IsDir() && d.Name() == ".git" {
			return errSkipDir
		}
		if stopped || !d.Type().IsRegular() {
			return nil
		}
		files++
		data, err := r.readFile(rel, scanFileLimit)
		if err != nil || files > scanFiles || total+len(data) > scanBytes {
			if err == nil || errors.Is(err, errTooLarge) {
				c.errorf("H2", rel, "too large to be searched for password hashes (a homed template's files are searched up to %d files, %d bytes each, %d bytes in all)", scanFiles, scanFileLimit, scanBytes)
				stopped = files > scanFiles || total+len(data) > scanBytes
			} else {
				c.warnf("X1", rel, "cannot inspect: %s", fileError(err))
			}
			return nil
		}
		total += len(data)
		if loc := cryptHash.FindIndex(data); loc != nil {
			line := 1 + strings.Count(string(data[:loc[0]]), "\n")
			c.errorf("H2", rel, "line %d holds a password hash (%.8s...); a template is shared and public to its users: remove it", line, data[loc[0]:loc[1]])
		}
		return nil
	}, func(rel string, err error) { c.warnf("X1", rel, "cannot inspect: %s", fileError(err)) })
	return err
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return "value"
}

func checkJSON(r *root, c *collector, p string, v any, required bool) bool {
	data, err := r.readFile(p, certLimit)
	if err != nil {
		if required || !errors.Is(err, fs.ErrNotExist) {
			c.errorf("X2", p, "cannot read: %s", fileError(err))
		}
		return false
	}
	if err := json.Unmarshal(data, v); err != nil {
		c.errorf("X2", p, "not valid JSON: %v", err)
		return false
	}
	return true
}

// validUserName checks systemd's strict user name rules (valid_user_group_name without relaxation).
func validUserName(s string) bool {
	if s == "" || len(s) > 31 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '_' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z':
		case i > 0 && (ch == '-' || ch >= '0' && ch <= '9'):
		default:
			return false
		}
	}
	return true
}
