package units

import (
	"fmt"
	"strconv"
	"strings"
)

// unitNameMax is the length a unit name must stay below (systemd's UNIT_NAME_MAX is 256 including the NUL).
// Longer mount unit names would be hashed by systemd (unit_name_hash_long), so Render refuses them instead.
const unitNameMax = 255

// Escape escapes s the way `systemd-escape s` does (unit_name_escape in systemd's src/basic/unit-name.c):
// "/" becomes "-", a leading "." and every byte outside [A-Za-z0-9:_.] becomes \xNN (lower-case hex),
// which includes "-" and "\" themselves. The result is usable as a unit instance name.
func Escape(s string) string {
	var b strings.Builder
	b.Grow(len(s) + len(s)/2)
	escapeTo(&b, s)
	return b.String()
}

func escapeTo(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0, !validUnitChar(c):
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		default:
			b.WriteByte(c)
		}
	}
}

func validUnitChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '.'
}

// EscapePath escapes p the way `systemd-escape --path p` does (unit_name_path_escape): the path is simplified
// (repeated and trailing slashes and "." components dropped), "/" alone becomes "-", otherwise the leading
// slashes are cut and the rest escaped as by Escape. A path with a ".." component, or a relative one made only of
// "." components, is refused, as systemd does; "" gives "-", as systemd does.
// This is the name stem of a .mount unit for Where=p.
func EscapePath(p string) (string, error) {
	s, err := simplifyPath(p)
	if err != nil {
		return "", err
	}
	if s == "/" || s == "" {
		return "-", nil
	}
	var b strings.Builder
	b.Grow(len(s) + len(s)/2)
	escapeTo(&b, strings.TrimLeft(s, "/"))
	return b.String(), nil
}

// simplifyPath is systemd's path_simplify followed by its path_is_normalized check.
func simplifyPath(p string) (string, error) {
	if p == "" {
		return "", nil // systemd-escape --path "" prints "-"
	}
	abs := strings.HasPrefix(p, "/")
	parts := strings.Split(p, "/")
	kept := parts[:0]
	for _, c := range parts {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: %q has a \"..\" component", ErrInvalidPath, p)
		}
		kept = append(kept, c)
	}
	s := strings.Join(kept, "/")
	if s == "" && !abs {
		return "", fmt.Errorf("%w: %q is no path (only \".\" components)", ErrInvalidPath, p)
	}
	if abs {
		s = "/" + s
	}
	if len(s) >= 4096 {
		return "", fmt.Errorf("%w: %q is longer than PATH_MAX", ErrInvalidPath, p)
	}
	return s, nil
}

// MountUnitName returns the name of the .mount unit whose Where= is the absolute path where.
func MountUnitName(where string) (string, error) {
	if !strings.HasPrefix(where, "/") {
		return "", fmt.Errorf("%w: mount point %q is not absolute", ErrInvalidPath, where)
	}
	e, err := EscapePath(where)
	if err != nil {
		return "", err
	}
	name := e + ".mount"
	if len(name) > unitNameMax {
		return "", fmt.Errorf("%w: mount unit for %q would be %d bytes long (systemd allows %d)", ErrNameTooLong, where, len(name), unitNameMax)
	}
	return name, nil
}

// InstanceName returns template@instance.suffix with the instance escaped as by Escape.
func InstanceName(template, instance, suffix string) (string, error) {
	name := template + "@" + Escape(instance) + suffix
	if len(name) > unitNameMax {
		return "", fmt.Errorf("%w: unit %q is %d bytes long (systemd allows %d)", ErrNameTooLong, name, len(name), unitNameMax)
	}
	return name, nil
}

// Unescape undoes Escape: each \xNN becomes the byte NN and "-" becomes "/" (systemd-escape --unescape).
func Unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x':
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
			b.WriteByte(s[i])
		case s[i] == '-':
			b.WriteByte('/')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
