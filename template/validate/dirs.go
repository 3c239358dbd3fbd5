package validate

import "io/fs"

// Dir is a directory a materialized tree needs but a Git checkout cannot carry (Git does not store empty
// directories nor directory modes).
type Dir struct {
	// Path is slash-separated and relative to the template checkout's root.
	Path string
	// Mode holds the permission bits, including fs.ModeSticky for 1777 directories.
	Mode fs.FileMode
}

// rootfsDirs are the directories of a root file system that rules C18 and C19 expect, parents first.
var rootfsDirs = []Dir{
	{"dev", 0o555}, {"etc", 0o755}, {"proc", 0o555}, {"root", 0o750}, {"run", 0o555}, {"sys", 0o555},
	{"tmp", 0o777 | fs.ModeSticky}, {"usr", 0o755}, {"var", 0o755}, {"var/tmp", 0o777 | fs.ModeSticky},
}

// RequiredDirs returns the directories the materializer must create (with exactly these modes, regardless of
// umask) in a checkout of the given kind, parents before children, relative to the checkout's root. Creating
// them makes the tree pass rules C18 and C19.
func RequiredDirs(kind Kind) []Dir {
	var prefix string
	switch kind {
	case KindInfrastructure, KindContainer:
		prefix = "rootfs"
	case KindMachine:
		prefix = "disk-image/rootfs"
	case KindHomed:
		return []Dir{
			{"home-skeleton/.config", 0o755}, {"home-skeleton/.config/systemd", 0o755},
			{"home-skeleton/.config/systemd/user", 0o755}, {"home-skeleton/.local", 0o755},
			{"home-skeleton/.local/bin", 0o755}, {"home-skeleton/.local/share", 0o755},
			{"home-skeleton/.ssh", 0o700},
		}
	default:
		return nil
	}
	out := make([]Dir, 0, len(rootfsDirs))
	for _, d := range rootfsDirs {
		out = append(out, Dir{Path: prefix + "/" + d.Path, Mode: d.Mode})
	}
	return out
}
