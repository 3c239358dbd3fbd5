package validate

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// MaxTemplateImages is how many disk images a container or machine template's extensions/ may hold (rule D39).
const MaxTemplateImages = 64

// TemplateImage is one disk-image extension in the extensions/ directory of a container or machine template.
type TemplateImage struct {
	File  string // the file name in extensions/, NAME.CLASS.raw
	Name  string // the image name, NAME: its release file is extension-release.NAME
	Class string // "sysext" or "confext"
}

// templateImages lists the images in r's extensions/ (sorted by file name), and what is wrong with the
// directory, each as a path and a message (rule D39, or D28 for the name).
func templateImages(r *root) (imgs []TemplateImage, bad [][2]string) {
	_, fi, err := r.lstat("extensions")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, [][2]string{{"extensions", "cannot inspect: " + fileError(err)}}
	}
	if !fi.IsDir() {
		return nil, [][2]string{{"extensions", "extensions/ of a container or machine template is a directory of disk images, not a " + fileKind(fi.Mode())}}
	}
	ents, err := r.readDir("extensions")
	if err != nil {
		return nil, [][2]string{{"extensions", "cannot read: " + fileError(err)}}
	}
	for _, e := range ents {
		p := "extensions/" + e.Name()
		class := ""
		for _, cl := range []string{"sysext", "confext"} {
			if strings.HasSuffix(e.Name(), "."+cl+".raw") {
				class = cl
			}
		}
		name := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".sysext.raw"), ".confext.raw")
		switch {
		case !e.Type().IsRegular():
			bad = append(bad, [2]string{p, fmt.Sprintf("a %s: extensions/ holds only disk images NAME.sysext.raw and NAME.confext.raw", fileKind(e.Type()))})
		case class == "":
			bad = append(bad, [2]string{p, "extensions/ holds only disk images NAME.sysext.raw and NAME.confext.raw: rename or remove it"})
		case MachineImageName(name) != "":
			bad = append(bad, [2]string{p, fmt.Sprintf("invalid image name %q: %s", name, MachineImageName(name))})
		default:
			imgs = append(imgs, TemplateImage{File: e.Name(), Name: name, Class: class})
		}
	}
	if len(imgs) > MaxTemplateImages {
		bad = append(bad, [2]string{"extensions", fmt.Sprintf("%d disk images, more than %d", len(imgs), MaxTemplateImages)})
	}
	return imgs, bad
}

// MachineImageName says why name cannot name an extension in a machine's extension directory (1 to 255 of
// A-Z, a-z, 0-9, _, ., +, -, not starting with "."), or "": stricter than systemd's image_name_is_valid (rule
// D28), as the name becomes a directory on the host.
func MachineImageName(name string) string {
	if name == "" || name[0] == '.' || len(name) > 255 {
		return "must be 1 to 255 characters and not start with \".\""
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.+-", c) >= 0) {
			return fmt.Sprintf("has the character %q (allowed: A-Z, a-z, 0-9, _, ., +, -)", c)
		}
	}
	return ""
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "file"
	}
	return "special file"
}

// TemplateImages lists the disk images in the extensions/ directory of the container or machine template checked
// out at dir, as the daemon extracts them; an error names the first entry rule D39 refuses.
func TemplateImages(dir string) ([]TemplateImage, error) {
	r, err := openRoot(dir)
	if err != nil {
		return nil, err
	}
	imgs, bad := templateImages(r)
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s: rule D39: %s", bad[0][0], bad[0][1])
	}
	return imgs, nil
}

// checkTemplateImages applies rule D39 to a container or machine template's extensions/: only disk images
// NAME.sysext.raw and NAME.confext.raw, with valid names, at most MaxTemplateImages. Their releases and files are
// read when the daemon extracts them with systemd-dissect, and checked against each machine's root before they
// reach it.
func checkTemplateImages(r *root, c *collector) {
	imgs, bad := templateImages(r)
	for _, b := range bad {
		rule := "D39"
		if strings.HasPrefix(b[1], "invalid image name") {
			rule = "D28"
		}
		c.errorf(rule, b[0], "%s", b[1])
	}
	for _, img := range imgs {
		c.infof("D39", "extensions/"+img.File, "a disk-image %s for the machines made from this template: its release, Verity and signature are read with systemd-dissect, and its files checked by rules D26-D36 and DC against each machine's root, when the daemon extracts it", img.Class)
	}
}
