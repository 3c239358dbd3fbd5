package validate

import (
	"context"
	"errors"

	"github.com/bitbuilder/bitbuilder/template/metadata"
)

// Template validates a template checkout whose kind its metadata.json declares: metadata.json is read (bounded,
// inside the checkout) and parsed with metadata.Parse, then the tree is validated as Tree does. A missing or
// invalid metadata.json is an X2 error finding per problem, and the tree is not validated further. The parsed
// metadata is returned when it parsed.
func Template(ctx context.Context, dir string, opts Options) (Report, *metadata.Metadata, error) {
	r, err := openRoot(dir)
	if err != nil {
		return Report{}, nil, err
	}
	c := &collector{}
	data, err := r.readFile("metadata.json", certLimit)
	if err != nil {
		c.errorf("X2", "metadata.json", "cannot read the template's metadata.json: %s", fileError(err))
		return c.report(), nil, nil
	}
	md, err := metadata.Parse(data)
	if err != nil {
		var me *metadata.Error
		if !errors.As(err, &me) {
			return Report{}, nil, err
		}
		for _, f := range me.Fields {
			c.errorf("X2", "metadata.json", "%s: %s", f.Path, f.Message)
		}
		return c.report(), nil, nil
	}
	rep, err := Tree(ctx, dir, Kind(md.Template.Type), opts)
	if err != nil {
		return Report{}, nil, err
	}
	return rep, md, nil
}
