package template

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// fetchRefSpecs mirror the remote's branches and tags, forced, so that
// force-pushed branches and moved tags are followed.
var fetchRefSpecs = []config.RefSpec{
	"+refs/heads/*:refs/heads/*",
	"+refs/tags/*:refs/tags/*",
}

// checkURL accepts an absolute local path, file://, https://, http://,
// ssh://, git:// and scp-style user@host:path, and returns it cleaned.
func checkURL(raw string) (string, error) {
	bad := func(reason string) error {
		return &FieldError{Field: "url", Reason: fmt.Sprintf("%q: %s", raw, reason)}
	}
	if raw == "" {
		return "", bad("empty")
	}
	for _, c := range raw {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return "", bad("contains whitespace or control characters")
		}
	}
	if strings.HasPrefix(raw, "-") {
		return "", bad("must not start with '-'")
	}
	if strings.HasPrefix(raw, "/") {
		return filepath.Clean(raw), nil
	}
	if scheme, _, ok := strings.Cut(raw, "://"); ok {
		u, err := url.Parse(raw)
		if err != nil {
			return "", bad(err.Error())
		}
		switch scheme {
		case "file":
			if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
				return "", bad("file:// URLs need an absolute path and no host")
			}
			return raw, nil
		case "https", "http", "ssh", "git":
			if u.Host == "" {
				return "", bad("no host")
			}
			// Credentials are never part of a template's URL: the URL is shown to every reader and logged.
			// ssh:// may name the (public) user; its key is Config.SSHKeyPath.
			if _, hasPassword := u.User.Password(); hasPassword || u.User != nil && scheme != "ssh" {
				return "", &FieldError{Field: "url", Reason: fmt.Sprintf("%q: credentials in the URL are refused (they would be shown to every reader and logged); "+
					"serve the repository without them or over ssh:// with the registry's key", RedactURL(raw))}
			}
			return raw, nil
		default:
			return "", bad(fmt.Sprintf("scheme %q is not supported (use a local path, file://, https://, http://, ssh:// or git://)", scheme))
		}
	}
	// scp-style user@host:path
	if at, colon := strings.Index(raw, "@"), strings.Index(raw, ":"); at > 0 && colon > at+1 && colon < len(raw)-1 {
		return raw, nil
	}
	return "", bad("not an absolute path or a supported URL (local path, file://, https://, http://, ssh://, git://, user@host:path)")
}

// RedactURL returns rawURL with the password (and, for schemes other than ssh, the user name) of its userinfo
// replaced by "redacted", for records made before such URLs were refused: what is shown or logged never
// carries a credential.
func RedactURL(rawURL string) string {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		if i, j := strings.Index(rawURL, "://"), strings.LastIndex(rawURL, "@"); j > i {
			return rawURL[:i+3] + "redacted@" + rawURL[j+1:]
		}
		return rawURL
	}
	if u.User == nil {
		return rawURL
	}
	if _, hasPassword := u.User.Password(); hasPassword || scheme != "ssh" {
		u.User = url.User("redacted")
	}
	return u.String()
}

// userinfoRE matches the userinfo of a URL inside a text, as Go's HTTP client and go-git print them
// ("http://user:***@host/...").
var userinfoRE = regexp.MustCompile(`://[^/@\s"'\x60]*@`)

// redactText removes from text (an error of go-git or of the transport about rawURL) what RedactURL removes from
// rawURL: the URL itself, any userinfo in a URL, and the user name and password on their own (when at least 4
// characters long, so that redacting does not mangle the text).
func redactText(text, rawURL string) string {
	red := RedactURL(rawURL)
	if red == rawURL {
		return text
	}
	text = strings.ReplaceAll(text, rawURL, red)
	text = userinfoRE.ReplaceAllString(text, "://redacted@")
	if u, err := url.Parse(rawURL); err == nil && u.User != nil {
		secrets := []string{u.User.Username()}
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
		for _, s := range secrets {
			for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
				if len(form) >= 4 {
					text = strings.ReplaceAll(text, form, "redacted")
				}
			}
		}
	}
	return text
}

// checkRef follows git check-ref-format, plus a full commit hash.
func checkRef(ref string) error {
	if ref == "" {
		return nil
	}
	bad := func(reason string) error {
		return &FieldError{Field: "ref", Reason: fmt.Sprintf("%q: %s", ref, reason)}
	}
	if strings.HasPrefix(ref, "-") || strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") ||
		strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, ".lock") {
		return bad("must not start with '-' or '/' or end with '/', '.' or '.lock'")
	}
	if strings.Contains(ref, "..") || strings.Contains(ref, "//") || strings.Contains(ref, "@{") || ref == "@" {
		return bad("must not contain '..', '//' or '@{'")
	}
	for _, c := range ref {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return bad(fmt.Sprintf("character %q is not allowed in a ref", c))
		}
	}
	for comp := range strings.SplitSeq(ref, "/") {
		if strings.HasPrefix(comp, ".") {
			return bad("a component must not start with '.'")
		}
	}
	return nil
}

// fetchResult is the refs the remote has, as fetched.
type fetchResult struct {
	refs map[plumbing.ReferenceName]*plumbing.Reference
}

func (f fetchResult) has(name string) bool {
	_, ok := f.refs[plumbing.ReferenceName(name)]
	return ok
}

func (r *Registry) transportOptions(rawURL string) (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return nil, &FieldError{Field: "url", Reason: err.Error()}
	}
	if ep.Protocol != "ssh" {
		return nil, nil
	}
	if r.cfg.SSHKeyPath == "" {
		return nil, &FetchError{URL: rawURL, Err: errors.New("ssh URL but the registry has no SSH key configured (Config.SSHKeyPath)")}
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	keys, err := gitssh.NewPublicKeysFromFile(user, r.cfg.SSHKeyPath, "")
	if err != nil {
		return nil, &FetchError{URL: rawURL, Err: fmt.Errorf("SSH key %s: %w", r.cfg.SSHKeyPath, err)}
	}
	kh := filepath.Join(filepath.Dir(r.cfg.SSHKeyPath), "known_hosts")
	if _, err := os.Stat(kh); err != nil {
		return nil, &FetchError{URL: rawURL, Err: fmt.Errorf("known hosts file %s (next to the SSH key) is required: %w", kh, err)}
	}
	cb, err := gitssh.NewKnownHostsCallback(kh)
	if err != nil {
		return nil, &FetchError{URL: rawURL, Err: fmt.Errorf("known hosts %s: %w", kh, err)}
	}
	keys.HostKeyCallback = cb
	return keys, nil
}

// fetch fetches the remote's branches and tags into repo (forced, pruning
// what the remote deleted), reporting progress and enforcing
// Limits.MaxFetchSize on the received pack. With needHead it first lists
// the remote's refs to learn its default branch (HEAD). The result holds
// the branches and tags as fetched, plus HEAD when listed.
func (r *Registry) fetch(ctx context.Context, repo *git.Repository, gitDir, rawURL string, rep *reporter, needHead bool) (fetchResult, error) {
	auth, err := r.transportOptions(rawURL)
	if err != nil {
		return fetchResult{}, err
	}
	remote, err := repo.Remote("origin")
	if err != nil {
		return fetchResult{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	fr := fetchResult{refs: map[plumbing.ReferenceName]*plumbing.Reference{}}
	fetchErr := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return &FetchError{URL: rawURL, Err: errors.New("the remote repository is empty (no commits)")}
		}
		return &FetchError{URL: rawURL, Err: err}
	}
	rep.setPhase(PhaseFetching, "fetching "+RedactURL(rawURL))
	if needHead {
		refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, CABundle: r.cfg.CABundle})
		if err != nil {
			return fetchResult{}, fetchErr(err)
		}
		for _, ref := range refs {
			if ref.Name() == plumbing.HEAD {
				fr.refs[plumbing.HEAD] = ref
			}
		}
	}

	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if gs, ok := repo.Storer.(*guardedStorage); ok {
		gs.refused = func(err error) { cancel(err) }
		defer func() { gs.refused = nil }()
	}
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n := packBytes(gitDir)
				if n > r.limits.MaxFetchSize {
					cancel(fmt.Errorf("%w: the fetch received more than %d bytes (Limits.MaxFetchSize)", ErrTooLarge, r.limits.MaxFetchSize))
					return
				}
				rep.report(Progress{Phase: PhaseFetching, Bytes: n}, false)
			}
		}
	}()
	err = remote.FetchContext(fctx, &git.FetchOptions{
		RefSpecs: fetchRefSpecs, Auth: auth, Progress: &sidebandWriter{r: rep}, Tags: git.NoTags,
		Force: true, Prune: true, CABundle: r.cfg.CABundle,
	})
	close(stop)
	<-polled
	if cause := context.Cause(fctx); cause != nil && ctx.Err() == nil && err != nil {
		return fetchResult{}, &FetchError{URL: rawURL, Err: cause}
	}
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fetchResult{}, fetchErr(err)
	}
	iter, err := repo.Storer.IterReferences()
	if err != nil {
		return fetchResult{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	iter.ForEach(func(ref *plumbing.Reference) error {
		if n := ref.Name().String(); strings.HasPrefix(n, "refs/heads/") || strings.HasPrefix(n, "refs/tags/") {
			fr.refs[ref.Name()] = ref
		}
		return nil
	})
	n := packBytes(gitDir)
	if n > r.limits.MaxFetchSize {
		return fetchResult{}, &FetchError{URL: rawURL, Err: fmt.Errorf("%w: the repository takes %d bytes, more than %d (Limits.MaxFetchSize)", ErrTooLarge, n, r.limits.MaxFetchSize)}
	}
	rep.report(Progress{Phase: PhaseFetching, Bytes: n, Message: "fetched " + RedactURL(rawURL)}, true)
	return fr, nil
}

// resolve finds the commit ref names after a fetch. See Add for the order.
func (r *Registry) resolve(st *filesystem.Storage, fr fetchResult, rawURL, ref string) (string, plumbing.Hash, error) {
	notFound := func(reason string) error { return &RefError{URL: rawURL, Ref: ref, Reason: reason} }
	if ref == "" {
		head, ok := fr.refs[plumbing.HEAD]
		if !ok || head.Type() != plumbing.SymbolicReference {
			return "", plumbing.ZeroHash, notFound("the remote does not advertise a default branch (HEAD); give a ref")
		}
		ref = head.Target().String()
	}
	if len(ref) == 40 && strings.Trim(ref, "0123456789abcdef") == "" {
		h := plumbing.NewHash(ref)
		if _, err := object.GetCommit(st, h); err != nil {
			return "", plumbing.ZeroHash, notFound("no commit with this hash is reachable from the remote's branches and tags")
		}
		return "", h, nil
	}
	candidates := []string{ref}
	if !strings.HasPrefix(ref, "refs/") {
		candidates = []string{"refs/" + ref, "refs/tags/" + ref, "refs/heads/" + ref}
	}
	for _, name := range candidates {
		if !strings.HasPrefix(name, "refs/heads/") && !strings.HasPrefix(name, "refs/tags/") {
			continue // only branches and tags are fetched
		}
		if !fr.has(name) {
			continue
		}
		stored, err := st.Reference(plumbing.ReferenceName(name))
		if err != nil {
			return "", plumbing.ZeroHash, fmt.Errorf("%w: %s advertised but not fetched: %w", ErrStorage, name, err)
		}
		h, err := peel(st, stored.Hash())
		if err != nil {
			return "", plumbing.ZeroHash, notFound(fmt.Sprintf("%s: %v", name, err))
		}
		return name, h, nil
	}
	var have []string
	for name := range fr.refs {
		if s := name.String(); strings.HasPrefix(s, "refs/heads/") || strings.HasPrefix(s, "refs/tags/") {
			if !strings.HasSuffix(s, "^{}") {
				have = append(have, name.Short())
			}
		}
	}
	if len(have) > 20 {
		have = append(have[:20], "...")
	}
	return "", plumbing.ZeroHash, notFound(fmt.Sprintf("no such branch or tag (the remote has: %s)", strings.Join(have, ", ")))
}

// peel follows annotated tags to a commit.
func peel(st *filesystem.Storage, h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		obj, err := st.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		switch obj.Type() {
		case plumbing.CommitObject:
			return h, nil
		case plumbing.TagObject:
			tag, err := object.DecodeTag(st, obj)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			h = tag.Target
		default:
			return plumbing.ZeroHash, fmt.Errorf("points at a %s, not a commit", obj.Type())
		}
	}
	return plumbing.ZeroHash, errors.New("tag chain too long")
}

// isForcePush reports whether old is not an ancestor of new.
func isForcePush(st *filesystem.Storage, old, new plumbing.Hash) (bool, error) {
	if old.IsZero() || old == new {
		return false, nil
	}
	oc, err := object.GetCommit(st, old)
	if err != nil {
		return false, err
	}
	nc, err := object.GetCommit(st, new)
	if err != nil {
		return false, err
	}
	anc, err := oc.IsAncestor(nc)
	if err != nil {
		return false, err
	}
	return !anc, nil
}
