// Package validate checks BitBuilder templates and extension images against the UAPI compliance rules of
// the project's spec (uapi-compliance.md, sections A-F), before a template is instantiated.
//
// # Rule identifiers
//
// Every Finding names the rule it reports with a stable identifier: the section letter and the rule number of
// the spec, e.g. "A1" (an os-release exists), "B14" (quoting), "D27" (extension-release name), "E46" (OpenPGP
// certificates), "F53" (kernel placement). The numbers are the spec's and are never reused or renumbered. A few
// findings have no number in the spec and use these identifiers:
//
//   - "DC": the extension is not compatible with the base root or target architecture (the systemd-sysext v257
//     compatibility algorithm of section D, see Compatible); systemd would skip it.
//   - "H1"-"H4": a homed template (the spec has no section for it): H1 its user record follows systemd's JSON
//     User Record format, H2 no secret, credential or password hash anywhere in it, H3 a uid or gid it sets is
//     in the regular range, H4 no symlink of its home skeleton leads out of the home.
//   - "X1": a file the validator must read could not be inspected (not a regular file, larger than the read
//     limit, unreadable, a symlink loop).
//   - "X2": a template file the validator understands (metadata.json, config/*.json, artifacts.json, nspawn
//     settings) is malformed.
//   - "X3": a path is not in the checkout but is listed in artifacts.json, so the materializer provides it from
//     the host (informational).
//
// Rules lists every identifier with its severities and a summary.
//
// # Safety
//
// Validation is read-only and is safe on hostile trees: symlinks are resolved inside the tree root the way
// chroot would (absolute targets restart at the tree root, ".." stops at it, at most 40 hops), the walk never
// follows a symlink, device nodes, FIFOs and sockets are never opened (every path is Lstat'ed first and files
// are opened with O_NOFOLLOW|O_NONBLOCK and checked with fstat), and reads are bounded. The walk is iterative,
// so deep or wide trees cost memory proportional to the number of pending directories, not stack.
package validate
