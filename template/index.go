package template

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
)

// indexFile is the name of the registry's record file in Config.Dir.
const indexFile = "index.json"

// indexVersion is the format version of index.json.
const indexVersion = 1

type indexDoc struct {
	Version   int        `json:"version"`
	Templates []Template `json:"templates"`
}

// loadIndex reads Dir/index.json; a missing file is an empty registry.
func loadIndex(dir string) (map[string]Template, error) {
	path := filepath.Join(dir, indexFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]Template{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrStorage, path, err)
	}
	var doc indexDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s is corrupt (left untouched): %w", ErrStorage, path, err)
	}
	if doc.Version != indexVersion {
		return nil, fmt.Errorf("%w: %s has format version %d, this build reads %d", ErrStorage, path, doc.Version, indexVersion)
	}
	out := make(map[string]Template, len(doc.Templates))
	for _, t := range doc.Templates {
		if err := checkName(t.Name); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrStorage, path, err)
		}
		if _, dup := out[t.Name]; dup {
			return nil, fmt.Errorf("%w: %s: template %q appears twice", ErrStorage, path, t.Name)
		}
		out[t.Name] = t
	}
	return out, nil
}

// saveIndex writes Dir/index.json atomically and durably (internal/atomicfile).
func saveIndex(dir string, idx map[string]Template) error {
	doc := indexDoc{Version: indexVersion, Templates: make([]Template, 0, len(idx))}
	for _, t := range idx {
		doc.Templates = append(doc.Templates, t)
	}
	slices.SortFunc(doc.Templates, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	data = append(data, '\n')
	if err := atomicfile.WriteFile(filepath.Join(dir, indexFile), data, atomicfile.Options{Mode: 0o600}); err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrStorage, indexFile, err)
	}
	return nil
}
